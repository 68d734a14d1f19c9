/// A gateway refusal on a `grpc` route, answered the gRPC way: a trailers-only response (HTTP
/// 200, `content-type: application/grpc`, `grpc-status` and `grpc-message`, no body). Sent
/// with `Content-Length: 0`, nginx ends the HTTP/2 stream on its HEADERS frame, which is what
/// a gRPC client reads as trailers-only (docs/protocols.md).
public enum GRPCRefusal {
    /// The gRPC status code for a gateway problem's HTTP status.
    public static func code(forHTTPStatus status: Int) -> Int {
        switch status {
        case 401: return 16          // UNAUTHENTICATED
        case 403: return 7           // PERMISSION_DENIED
        case 404, 405: return 12     // UNIMPLEMENTED
        case 413, 429, 431: return 8 // RESOURCE_EXHAUSTED
        case 502, 503: return 14     // UNAVAILABLE
        case 504: return 4           // DEADLINE_EXCEEDED
        case 400, 500: return 13     // INTERNAL, as the gRPC HTTP-to-status mapping has it
        default: return 2            // UNKNOWN
        }
    }

    /// The response head for `problem`: status 200, the problem's own fields (`Retry-After`,
    /// `RateLimit-*`) kept, and the problem type as `portcullis-problem` metadata.
    public static func head(_ problem: ProblemDetails) -> (status: Int, headers: HTTPHeaders) {
        var headers = problem.headers
        headers.set("Content-Type", "application/grpc")
        headers.set("grpc-status", String(code(forHTTPStatus: problem.status)))
        headers.set("grpc-message", percentEncodedMessage(problem.detail))
        headers.set("portcullis-problem", problem.type)
        headers.set("Content-Length", "0")
        headers.set("Cache-Control", "no-store")
        return (200, headers)
    }

    /// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
    public static func percentEncodedMessage(_ message: String) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(message.utf8.count)
        for c in message.utf8 {
            if c >= 0x20 && c <= 0x7E && c != 0x25 {
                out.append(c)
            } else {
                out.append(0x25)
                out.append(Hex.digits[Int(c >> 4)])
                out.append(Hex.digits[Int(c & 0x0F)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
