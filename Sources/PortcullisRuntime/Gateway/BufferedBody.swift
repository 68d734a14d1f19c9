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
    /// The bytes go straight into the array's storage, sized for `expected` (the announced
    /// length) plus one byte that tells whether more follows: a zeroed 64 KB scratch chunk per
    /// call was most of the cost of reading a small body. Only a body longer than announced
    /// (or of unknown length) is read on through a scratch chunk.
    static func readAll(from source: BodySource, expected: Int) -> [UInt8] {
        var ended = false
        var out = [UInt8](unsafeUninitializedCapacity: max(expected, 0) + 1) { buffer, count in
            count = 0
            let storage = UnsafeMutableRawBufferPointer(buffer)
            while count < storage.count {
                let n = source.read(into: UnsafeMutableRawBufferPointer(rebasing: storage[count...]))
                if n <= 0 { ended = true; return }
                count += n
            }
        }
        if ended { return out }
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 1)
        defer { chunk.deallocate() }
        while true {
            let n = source.read(into: chunk)
            if n <= 0 { break }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
        }
        return out
    }
}
