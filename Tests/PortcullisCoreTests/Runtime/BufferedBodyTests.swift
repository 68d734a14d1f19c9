import XCTest
@testable import PortcullisRuntime

/// Reading a whole request body: every byte in order, whether the announced length is exact,
/// short, long or unknown, and however the source splits its reads.
final class BufferedBodyTests: XCTestCase {
    /// Hands out `bytes` in pieces of at most `step` bytes, and counts the reads after the end.
    final class Pieces: BodySource {
        let bytes: [UInt8]
        let step: Int
        var offset = 0
        var readsAfterEnd = 0
        init(_ bytes: [UInt8], step: Int) { self.bytes = bytes; self.step = step }
        func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
            let n = min(step, buffer.count, bytes.count - offset)
            guard n > 0 else { readsAfterEnd += 1; return 0 }
            bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
            offset += n
            return n
        }
    }

    func testEveryByteWhateverTheAnnouncedLength() {
        for size in [0, 1, 7, 2048, 70_000, 200_003] {
            let body = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            for expected in Set([0, size / 2, max(size - 1, 0), size, size + 1, size * 2]) {
                for step in [1, 3, 4096, 1 << 20] where size < 10_000 || step > 1 {
                    let source = Pieces(body, step: step)
                    XCTAssertEqual(BufferedBody.readAll(from: source, expected: expected), body, "size \(size) expected \(expected) step \(step)")
                    XCTAssertEqual(source.readsAfterEnd, 1, "the end is read once: size \(size) expected \(expected) step \(step)")
                }
            }
        }
    }

    func testBufferedBodyHandsTheBytesBackInPieces() {
        let body = BufferedBody(Array("hello, world".utf8))
        var out = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 5)
        while true {
            let n = chunk.withUnsafeMutableBytes { body.read(into: $0) }
            if n == 0 { break }
            out += chunk[0..<n]
        }
        XCTAssertEqual(String(decoding: out, as: UTF8.self), "hello, world")
    }
}
