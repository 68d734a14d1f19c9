import Foundation
import PortcullisCore

/// Test fixtures on disk (the repository's config/ and plugins/), read the way the runtime's
/// DiskConfigFiles reads them.
struct FixtureFiles: ConfigFiles {
    func contents(_ path: String) -> [UInt8]? { FileManager.default.contents(atPath: path).map { Array($0) } }
    func regularFiles(in directory: String) -> [String]? {
        (try? FileManager.default.contentsOfDirectory(atPath: directory))
    }
}
