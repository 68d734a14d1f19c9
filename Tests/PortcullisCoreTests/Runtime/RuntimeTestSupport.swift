import Foundation
@testable import PortcullisCore
@testable import PortcullisRuntime

/// A response sink that keeps what it was sent (head and body) in memory.
class RecordingSink: ResponseSink {
    var isOpen = true
    var headSent = false
    var bytesSent = 0
    var status = 0
    var headers = HTTPHeaders()
    var body: [UInt8] = []
    var text: String { String(decoding: body, as: UTF8.self) }

    func sendHead(status: Int, headers: HTTPHeaders) {
        guard !headSent else { return }
        headSent = true
        self.status = status
        self.headers = headers
    }

    func sendBody(_ bytes: UnsafeRawBufferPointer) {
        body.append(contentsOf: bytes)
        bytesSent += bytes.count
    }

    /// Heads that came as the parser's bytes (the plain streaming path), not as `HTTPHeaders`.
    var rawHeads = 0

    func sendUpstreamHead(status: Int, fields: RawHeaderFields, allowAccelBuffering: Bool) {
        rawHeads += 1
        sendHead(status: status, headers: HeaderHygiene.downstreamResponseHeaders(fields.headers(), allowAccelBuffering: allowAccelBuffering))
    }
}

/// A TCP socket bound to 127.0.0.1 on a free port (listening when `backlog` is given).
enum LoopbackSocket {
    static func bind(listen backlog: Int32? = nil) throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound, backlog.map({ listen(fd, $0) == 0 }) ?? true else {
            close(fd)
            throw RuntimeError("cannot bind a loopback socket")
        }
        return (fd, UInt16(bigEndian: address.sin_port))
    }
}
