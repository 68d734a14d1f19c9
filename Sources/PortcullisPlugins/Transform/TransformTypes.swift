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
    /// The `Host` to send upstream (`host.set`); nil: the upstream target's own.
    public var host: String?

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

    /// A `path.rewrite` regex that does not match the path (and the rule does not say
    /// `"on_no_match": "pass"`): the public path has no upstream path, so 404.
    public static func rewriteNoMatch(ruleSet: String) -> ProblemDetails {
        ProblemDetails(status: 404, type: "rewrite-no-match", title: "Not Found",
                       detail: "the path does not match the path.rewrite of rule set \"\(ruleSet)\"")
    }

    /// A path rewrite whose rendered values would leave the template's prefix (a `/` in a
    /// value, a `.` or `..` segment): 400.
    public static func transformUnsafePath(_ detail: String) -> ProblemDetails {
        ProblemDetails(status: 400, type: "transform-unsafe-path", title: "Bad Request", detail: detail)
    }

    /// A rendered value that cannot be sent (control characters in a header, a bad path): 500.
    public static func transformUnsafeValue(_ detail: String) -> ProblemDetails {
        ProblemDetails(status: 500, type: "transform-unsafe-value", title: "Internal Server Error", detail: detail)
    }
}

/// `application/x-www-form-urlencoded` (parameters such as `charset` ignored): bodies form
/// operations may touch.
public enum FormMediaType {
    public static func matches(_ contentType: String?) -> Bool {
        guard var contentType else { return false }
        // ASCII (all real media types) is compared as bytes; other text keeps the Character
        // semantics of `matchesCharacters` (a non-ASCII letter may lowercase to ASCII).
        if let ascii = contentType.withUTF8({ matchesASCII($0) }) { return ascii }
        return matchesCharacters(contentType)
    }

    static func matchesCharacters(_ contentType: String) -> Bool {
        let essence = contentType.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        return essence.trimmingSpaces().lowercased() == "application/x-www-form-urlencoded"
    }

    /// `matchesCharacters` for ASCII text, without allocating; nil when the text is not ASCII.
    static func matchesASCII(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool? {
        guard !bytes.contains(where: { $0 >= 0x80 }) else { return nil }
        // Like `split(separator: ";", omittingEmptySubsequences: false)`: the text before the first ";".
        let essence = JSONMediaType.trimmedSpaces(bytes, 0, bytes.firstIndex(of: UInt8(ascii: ";")) ?? bytes.count)
        return ASCIICase.equal(essence, lower: "application/x-www-form-urlencoded")
    }
}

/// Media types whose bodies JSON operations may touch: `application/json` and `*/*+json`.
public enum JSONMediaType {
    public static func matches(_ contentType: String?) -> Bool {
        guard var contentType else { return false }
        // Every request and response asks, so ASCII (all real media types) is read as bytes;
        // other text keeps the Character semantics of `matchesCharacters`.
        if let ascii = contentType.withUTF8({ matchesASCII($0) }) { return ascii }
        return matchesCharacters(contentType)
    }

    static func matchesCharacters(_ contentType: String) -> Bool {
        let essence = contentType.split(separator: ";", maxSplits: 1).first.map { $0.trimmingSpaces().lowercased() } ?? ""
        guard let slash = essence.firstIndex(of: "/") else { return false }
        let subtype = essence[essence.index(after: slash)...]
        return essence == "application/json" || (subtype.hasSuffix("+json") && slash != essence.startIndex)
    }

    /// `matchesCharacters` for ASCII text, without allocating; nil when the text is not ASCII.
    static func matchesASCII(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool? {
        guard !bytes.contains(where: { $0 >= 0x80 }) else { return nil }
        // Like `split(separator: ";")`, which omits empty pieces: leading ";"s are skipped.
        let start = bytes.firstIndex { $0 != UInt8(ascii: ";") } ?? bytes.count
        let essence = trimmedSpaces(bytes, start, bytes[start...].firstIndex(of: UInt8(ascii: ";")) ?? bytes.count)
        guard let slash = essence.firstIndex(of: UInt8(ascii: "/")) else { return false }
        func equalsLowercased(_ text: UnsafeBufferPointer<UInt8>, _ expected: StaticString) -> Bool {
            guard text.count == expected.utf8CodeUnitCount else { return false }
            let expectedBytes = UnsafeBufferPointer(start: expected.utf8Start, count: expected.utf8CodeUnitCount)
            return zip(text, expectedBytes).allSatisfy { pair in
                let c = pair.0
                return (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z") ? c | 0x20 : c) == pair.1
            }
        }
        if equalsLowercased(essence, "application/json") { return true }
        let suffix = "+json".utf8.count
        return slash != 0 && essence.count - (slash + 1) >= suffix
            && equalsLowercased(UnsafeBufferPointer(rebasing: essence[(essence.count - suffix)...]), "+json")
    }

    /// `bytes[start..<end]` without leading and trailing spaces and tabs (`trimmingSpaces`).
    static func trimmedSpaces(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> UnsafeBufferPointer<UInt8> {
        var start = start, end = end
        func isSpace(_ c: UInt8) -> Bool { c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") }
        while start < end, isSpace(bytes[start]) { start += 1 }
        while end > start, isSpace(bytes[end - 1]) { end -= 1 }
        return UnsafeBufferPointer(rebasing: bytes[start..<end])
    }
}

/// What `host.set` may send: a host name or IPv4 address, or a bracketed IPv6 address, with an
/// optional port; nothing a request line or header could be split on.
enum HostValue {
    static func isValid(_ text: String, allowEmpty: Bool = false) -> Bool {
        if text.isEmpty { return allowEmpty }
        return text.utf8.count <= 255 && text.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                || c == UInt8(ascii: ".") || c == UInt8(ascii: "-") || c == UInt8(ascii: "_") || c == UInt8(ascii: ":")
                || c == UInt8(ascii: "[") || c == UInt8(ascii: "]")
        }
    }
}
