import Foundation
import XCTest

/// Runs every saved fuzz input (`Tests/Fuzz/corpus/<target>/`, seeds and the regression inputs
/// of fixed crashes) through its target once, with no time-based fuzzing: part of `make test`.
final class FuzzCorpusReplayTests: XCTestCase {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../Fuzz/corpus").standardizedFileURL

    func testEveryTargetHasACorpus() throws {
        for name in FuzzTargets.all.keys.sorted() {
            let files = try FileManager.default.contentsOfDirectory(atPath: Self.corpus.appendingPathComponent(name).path)
            XCTAssertFalse(files.isEmpty, "Tests/Fuzz/corpus/\(name) is empty")
        }
    }

    func testReplayEverySavedInput() throws {
        var replayed = 0
        for (name, target) in FuzzTargets.all.sorted(by: { $0.key < $1.key }) {
            let directory = Self.corpus.appendingPathComponent(name)
            for file in try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() {
                let data = try Data(contentsOf: directory.appendingPathComponent(file))
                target(Array(data))
                replayed += 1
            }
        }
        XCTAssertGreaterThan(replayed, FuzzTargets.all.count, "seeds exist for every target")
    }
}
