#if canImport(Glibc)
import Glibc
#endif
import CPortcullis

/// Why a shared file could not be created or mapped.
struct MappedWordsError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A file of 64-bit words mapped `MAP_SHARED` by the master and every worker: the rate-limit
/// table and the metrics file. Created whole under a temporary name and renamed into place, so
/// a process still mapping an older file keeps a consistent one and a reader never sees a
/// header half written.
enum MappedWords {
    /// Creates a zeroed file of `bytes` at `path`; `initialize` writes its header (storing the
    /// magic word last, with a release store) before the rename publishes it.
    static func create(path: String, bytes: Int, initialize: (UnsafeMutablePointer<UInt64>) -> Void)
        throws(MappedWordsError) -> UnsafeMutablePointer<UInt64> {
        let tmp = path + ".tmp.\(getpid())"
        let fd = Glibc.open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw MappedWordsError("cannot create \(tmp): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(bytes)) == 0 else {
            let e = errno
            unlink(tmp)
            throw MappedWordsError("cannot size \(tmp) to \(bytes) bytes: \(String(cString: strerror(e)))")
        }
        let base: UnsafeMutablePointer<UInt64>
        do {
            base = try map(fd: fd, bytes: bytes, path: tmp)
        } catch {
            unlink(tmp)
            throw error
        }
        initialize(base)
        guard rename(tmp, path) == 0 else {
            let e = errno
            munmap(base, bytes)
            unlink(tmp)
            throw MappedWordsError("cannot rename \(tmp) to \(path): \(String(cString: strerror(e)))")
        }
        return base
    }

    /// Maps an existing file whole; nil when it is smaller than `minimumBytes` (not the file the
    /// caller expects).
    static func open(path: String, minimumBytes: Int) throws(MappedWordsError) -> (base: UnsafeMutablePointer<UInt64>, bytes: Int)? {
        let fd = Glibc.open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw MappedWordsError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, Int(st.st_size) >= minimumBytes else { return nil }
        return (try map(fd: fd, bytes: Int(st.st_size), path: path), Int(st.st_size))
    }

    private static func map(fd: Int32, bytes: Int, path: String) throws(MappedWordsError) -> UnsafeMutablePointer<UInt64> {
        guard let raw = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), raw != MAP_FAILED else {
            throw MappedWordsError("cannot map \(path): \(String(cString: strerror(errno)))")
        }
        return raw.bindMemory(to: UInt64.self, capacity: bytes / 8)
    }
}
