import XCTest
@testable import PortcullisCore

/// `ByteBuffer`, the output of heads and access-log lines, and the `ByteSink` helpers it
/// shares with byte arrays.
final class ByteBufferTests: XCTestCase {
    func testHelpersWriteTheSameBytesIntoAnArrayAndABuffer() {
        func write<Sink: ByteSink>(_ out: inout Sink) {
            out.appendASCII("Status: ")
            out.appendDecimal(-1_234_567)
            out.appendDecimal(0)
            out.appendUTF8("caf\u{e9} \u{1F600}")
            out.appendUTF8("x-y-z".split(separator: "-")[1])
            out.append(0x0A)
        }
        var array: [UInt8] = []
        write(&array)
        var buffer = ByteBuffer(capacity: 1)
        defer { buffer.deallocate() }
        write(&buffer)
        XCTAssertEqual(buffer.array, array)
        XCTAssertEqual(String(decoding: array, as: UTF8.self), "Status: -12345670caf\u{e9} \u{1F600}y\n")
    }

    func testRemoveKeepsTheStorageAndAppendUpToKeepsWhatWasFilled() {
        var buffer = ByteBuffer(capacity: 16)
        defer { buffer.deallocate() }
        Array("0123456789".utf8).withUnsafeBufferPointer { buffer.append(bytes: $0) }
        buffer.removeLast(4)
        XCTAssertEqual(String(decoding: buffer.array, as: UTF8.self), "012345")
        let storage = buffer.bytes.baseAddress
        buffer.removeAll()
        XCTAssertTrue(buffer.isEmpty)
        XCTAssertEqual(buffer.bytes.baseAddress, storage, "the storage is kept")

        buffer.append(UInt8(ascii: "a"))
        // The fill may write less than it was offered: only what it reports is kept.
        buffer.append(upTo: 100) { space in
            XCTAssertEqual(space.count, 100)
            space.copyBytes(from: "bcd".utf8)
            return 3
        }
        XCTAssertEqual(String(decoding: buffer.array, as: UTF8.self), "abcd")
        XCTAssertGreaterThanOrEqual(buffer.capacity, 101)
        buffer.append(upTo: 8) { _ in 0 }
        buffer.append(upTo: 8) { _ in -1 }
        XCTAssertEqual(buffer.count, 4, "a fill that read nothing (or failed) adds nothing")
        buffer.reserveCapacity(10_000)
        XCTAssertGreaterThanOrEqual(buffer.capacity, 10_000)
        XCTAssertEqual(String(decoding: buffer.array, as: UTF8.self), "abcd", "growing keeps the bytes")
    }

    /// A log buffer gathers several lines: each writer appends after what is there, and the
    /// buffer it gives back holds them all even when it had to grow.
    func testLineWriterAppendsToTheCallersBuffer() {
        var log = ByteBuffer(capacity: 16)
        defer { log.deallocate() }
        for i in 0..<3 {
            var w = JSONLineWriter(appendingTo: log)
            w.field("n", i)
            w.field("s", String(repeating: "x", count: 40 * i))
            log = w.finishAppending()
        }
        let lines = String(decoding: log.array, as: UTF8.self).split(separator: "\n")
        XCTAssertEqual(lines, [#"{"n":0,"s":""}"#, #"{"n":1,"s":"\#(String(repeating: "x", count: 40))"}"#,
                               #"{"n":2,"s":"\#(String(repeating: "x", count: 80))"}"#])
    }
}
