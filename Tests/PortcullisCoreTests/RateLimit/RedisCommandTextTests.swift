import CHiredis
import XCTest
@testable import PortcullisCore
@testable import PortcullisRuntime

/// The RESP text the store writes itself is byte for byte what hiredis formats from the same
/// arguments (`redisFormatCommandArgv`, which the store used before).
final class RedisCommandTextTests: XCTestCase {
    /// hiredis's text for `args`.
    func hiredis(_ args: [[UInt8]]) -> [UInt8] {
        var target: UnsafeMutablePointer<CChar>?
        let pointers = args.map { a -> UnsafeMutablePointer<CChar> in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, a.count))
            a.withUnsafeBytes { UnsafeMutableRawPointer(p).copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(p), byteCount: a.count) }
            return p
        }
        defer { pointers.forEach { $0.deallocate() } }
        var argv = pointers.map { Optional(UnsafePointer($0)) }
        let lengths = args.map(\.count)
        let n = redisFormatCommandArgv(&target, Int32(args.count), &argv, lengths)
        defer { redisFreeCommand(target) }
        return Array(UnsafeRawBufferPointer(start: target, count: Int(n)))
    }

    func testCommandsAreWhatHiredisFormats() {
        let commands: [[String]] = [
            ["PING"], ["SCRIPT", "LOAD", RedisRateLimitScript.source], ["AUTH", "user", "pa ss\r\n$3\r\n"],
            ["SENTINEL", "get-master-addr-by-name", "mymaster"], ["SET", "", "é日本"], ["PTTL", String(repeating: "k", count: 300)],
        ]
        for args in commands {
            var written: [UInt8] = []
            RedisCommandText.append(args, to: &written)
            XCTAssertEqual(written, hiredis(args.map { Array($0.utf8) }), args.first!)
        }
    }

    /// The pieces of a script call: numbers in decimal and the counter's key, for random values.
    func testScriptCallArgumentsAreWhatHiredisFormats() {
        var g = SystemRandomNumberGenerator()
        let prefix = Array("bench:rl:".utf8)
        let numbers: [Int64] = [0, 1, 9, 10, 99, 100, -1, -10, .max, .min, 1_000_000, 1_764_517_384_123_456]
            + (0..<300).map { _ in Int64.random(in: .min ... .max, using: &g) >> Int64.random(in: 0...63, using: &g) }
        for (i, n) in numbers.enumerated() {
            let hash = UInt64.random(in: 1...UInt64.max, using: &g) >> UInt64(i % 64)
            var written: [UInt8] = []
            RedisCommandText.appendCount(3, to: &written)
            RedisCommandText.appendBulk("a", to: &written)
            RedisCommandText.appendBulk(decimal: n, to: &written)
            RedisCommandText.appendBulk(prefix: prefix, hex: hash, to: &written)
            let hex = String(hash, radix: 16)
            let key = "bench:rl:" + String(repeating: "0", count: 16 - hex.count) + hex
            XCTAssertEqual(written, hiredis([Array("a".utf8), Array(String(n).utf8), Array(key.utf8)]), "\(n) \(hash)")
        }
    }
}
