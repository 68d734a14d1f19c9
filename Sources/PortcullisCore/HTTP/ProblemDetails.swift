/// An error the gateway itself answers, as RFC 9457 `application/problem+json`.
public struct ProblemDetails: Sendable, Equatable {
    public var status: Int
    public var title: String
    public var detail: String
    /// A stable URI per kind of problem, under the gateway's documentation namespace.
    public var type: String
    public var headers: HTTPHeaders
    /// Extra members (e.g. `allowed` on 405).
    public var extensions: JSONObject

    public init(status: Int, type: String, title: String, detail: String, headers: HTTPHeaders = HTTPHeaders(),
                extensions: JSONObject = JSONObject()) {
        self.status = status
        self.type = type.contains(":") ? type : "https://portcullis.dev/problems/" + type
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extensions = extensions
    }

    public static let contentType = "application/problem+json"

    /// The body, with the request id every gateway error carries.
    public func body(requestId: String) -> [UInt8] {
        var object = JSONObject([
            ("type", .string(type)), ("title", .string(title)), ("status", .int(Int64(status))),
            ("detail", .string(detail)), ("request_id", .string(requestId)),
        ])
        for (k, v) in extensions.entries { object[k] = v }
        return JSONCodec.serializeBytes(.object(object))
    }

    public static func notFound(path: String) -> ProblemDetails {
        ProblemDetails(status: 404, type: "route-not-found", title: "Not Found", detail: "no route matches this request")
    }

    public static func methodNotAllowed(_ method: String, allowed: [String]) -> ProblemDetails {
        var headers = HTTPHeaders()
        headers.add("Allow", allowed.joined(separator: ", "))
        return ProblemDetails(status: 405, type: "method-not-allowed", title: "Method Not Allowed",
                              detail: "method \(method) is not allowed on this route", headers: headers,
                              extensions: JSONObject([("allowed", .array(allowed.map { .string($0) }))]))
    }

    public static func badGateway(_ detail: String) -> ProblemDetails {
        ProblemDetails(status: 502, type: "upstream-unavailable", title: "Bad Gateway", detail: detail)
    }

    public static func gatewayTimeout(_ detail: String) -> ProblemDetails {
        ProblemDetails(status: 504, type: "upstream-timeout", title: "Gateway Timeout", detail: detail)
    }

    public static func payloadTooLarge(limit: Int64) -> ProblemDetails {
        ProblemDetails(status: 413, type: "payload-too-large", title: "Payload Too Large",
                       detail: "request body exceeds \(limit) bytes")
    }

    public static func headersTooLarge(limit: Int) -> ProblemDetails {
        ProblemDetails(status: 431, type: "request-header-fields-too-large", title: "Request Header Fields Too Large",
                       detail: "request headers exceed \(limit) bytes")
    }

    /// More `Connection` tokens than any real client sends: each names a header to strip,
    /// so an unbounded list is work an unauthenticated client could make the gateway do.
    public static func tooManyConnectionTokens(limit: Int) -> ProblemDetails {
        ProblemDetails(status: 400, type: "too-many-connection-tokens", title: "Bad Request",
                       detail: "the Connection header names more than \(limit) tokens")
    }

    /// A FastCGI request without the facts nginx always sends (it was cut short, or did not
    /// come from the shipped snippet).
    public static func incompleteRequest(missing: String) -> ProblemDetails {
        ProblemDetails(status: 400, type: "incomplete-request", title: "Bad Request",
                       detail: "the FastCGI request lacks \(missing)")
    }

    public static func internalError(_ detail: String) -> ProblemDetails {
        ProblemDetails(status: 500, type: "internal-error", title: "Internal Server Error", detail: detail)
    }

}

/// Reason phrases for the FastCGI `Status` line.
public enum HTTPStatus {
    public static func reason(_ code: Int) -> String {
        switch code {
        case 100: return "Continue"
        case 200: return "OK"
        case 201: return "Created"
        case 202: return "Accepted"
        case 204: return "No Content"
        case 206: return "Partial Content"
        case 301: return "Moved Permanently"
        case 302: return "Found"
        case 303: return "See Other"
        case 304: return "Not Modified"
        case 307: return "Temporary Redirect"
        case 308: return "Permanent Redirect"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 409: return "Conflict"
        case 410: return "Gone"
        case 413: return "Content Too Large"
        case 415: return "Unsupported Media Type"
        case 422: return "Unprocessable Content"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        default: return "Status \(code)"
        }
    }
}
