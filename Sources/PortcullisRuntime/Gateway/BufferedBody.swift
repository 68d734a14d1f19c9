import PortcullisCore

/// A request body held in memory (after a request transform), read by libcurl.
final class BufferedBody: BodySource {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let n = min(buffer.count, bytes.count - offset)
        guard n > 0 else { return 0 }
        bytes.withUnsafeBytes { src in
            buffer.baseAddress!.copyMemory(from: src.baseAddress! + offset, byteCount: n)
        }
        offset += n
        return n
    }

    /// Reads a whole body; nginx has already buffered it, so this does not wait on the client.
    static func readAll(from source: BodySource, expected: Int) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(expected)
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { source.read(into: $0) }
            if n <= 0 { break }
            out.append(contentsOf: chunk[0..<n])
        }
        return out
    }
}
