import PortcullisCore

/// The parts of a request that request-phase rule sets may change. The pipeline builds it
/// after routing (path = the path about to be forwarded) and forwards what comes out.
public struct TransformableRequest: Sendable {
    public var method: String
    /// The path to forward upstream (decoded, as routing produced it).
    public var path: String
    /// Raw query string without `?`. Rewritten (re-encoded) only when a query operation ran,
    /// so untouched queries reach the upstream byte for byte.
    public var rawQuery: String
    public var headers: HTTPHeaders
    /// The buffered body, or nil when the pipeline streams it (see `needsRequestBody`).
    public var body: [UInt8]?
    /// The body's media type (FastCGI's `CONTENT_TYPE`); falls back to the `Content-Type` header.
    public var contentType: String?

    public init(method: String, path: String, rawQuery: String = "", headers: HTTPHeaders = HTTPHeaders(),
                body: [UInt8]? = nil, contentType: String? = nil) {
        self.method = method
        self.path = path
        self.rawQuery = rawQuery
        self.headers = headers
        self.body = body
        self.contentType = contentType ?? headers["content-type"]
    }
}

/// What happened to the body.
public enum BodyOutcome: Sendable, Equatable {
    /// Not read or not changed: the original bytes may be streamed as they are.
    case untouched
    /// Replaced by `byteCount` new bytes; the caller sends them with that `Content-Length`.
    case replaced(byteCount: Int)
}

/// A transformation that could not be carried out; the pipeline answers `problem` (as
/// problem+json with the request id) and logs `ruleSet` and `problem.detail`.
public struct TransformError: Error, Sendable, Equatable, CustomStringConvertible {
    public let problem: ProblemDetails
    /// The rule set that failed (empty when the failure is not tied to one).
    public let ruleSet: String

    public init(problem: ProblemDetails, ruleSet: String) {
        self.problem = problem
        self.ruleSet = ruleSet
    }

    public var description: String { "rule set \"\(ruleSet)\": \(problem.status) \(problem.detail)" }
}

/// The problem bodies of transformation failures.
extension ProblemDetails {
    /// A body too large to transform: 413 for a request, 502 for an upstream response.
    public static func transformBodyTooLarge(phase: TransformPhase, limit: Int64, ruleSet: String) -> ProblemDetails {
        switch phase {
        case .request:
            return ProblemDetails(status: 413, type: "transform-body-too-large", title: "Payload Too Large",
                                  detail: "request body exceeds the \(limit) byte limit of rule set \"\(ruleSet)\"")
        case .response:
            return ProblemDetails(status: 502, type: "transform-body-too-large", title: "Bad Gateway",
                                  detail: "upstream response body exceeds the \(limit) byte limit of rule set \"\(ruleSet)\"")
        }
    }

    /// A JSON body that does not parse: 400 for a request, 502 for an upstream response.
    public static func transformInvalidJSON(phase: TransformPhase, reason: String) -> ProblemDetails {
        switch phase {
        case .request:
            return ProblemDetails(status: 400, type: "transform-invalid-json", title: "Bad Request",
                                  detail: "request body is not valid JSON: \(reason)")
        case .response:
            return ProblemDetails(status: 502, type: "transform-invalid-json", title: "Bad Gateway",
                                  detail: "upstream response body is not valid JSON: \(reason)")
        }
    }

    /// A strict body operation found no value or a different type: 422 / 502.
    public static func transformBodyMismatch(phase: TransformPhase, ruleSet: String, reason: String) -> ProblemDetails {
        switch phase {
        case .request:
            return ProblemDetails(status: 422, type: "transform-body-mismatch", title: "Unprocessable Content",
                                  detail: "request body does not fit rule set \"\(ruleSet)\": \(reason)")
        case .response:
            return ProblemDetails(status: 502, type: "transform-body-mismatch", title: "Bad Gateway",
                                  detail: "upstream response body does not fit rule set \"\(ruleSet)\": \(reason)")
        }
    }

    /// A rendered value that cannot be sent (control characters in a header, a bad path): 500.
    public static func transformUnsafeValue(_ detail: String) -> ProblemDetails {
        ProblemDetails(status: 500, type: "transform-unsafe-value", title: "Internal Server Error", detail: detail)
    }
}

/// Media types whose bodies JSON operations may touch: `application/json` and `*/*+json`.
public enum JSONMediaType {
    public static func matches(_ contentType: String?) -> Bool {
        guard let contentType else { return false }
        let essence = contentType.split(separator: ";", maxSplits: 1).first.map { $0.trimmingSpaces().lowercased() } ?? ""
        guard let slash = essence.firstIndex(of: "/") else { return false }
        let subtype = essence[essence.index(after: slash)...]
        return essence == "application/json" || (subtype.hasSuffix("+json") && slash != essence.startIndex)
    }
}
