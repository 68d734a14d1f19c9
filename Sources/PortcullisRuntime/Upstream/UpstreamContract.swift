import PortcullisCore

// The contract both upstream clients implement (libcurl for https and host names, the lean
// HTTP/1.1 client for plain-HTTP IP targets); `Upstreams` picks one per target.

/// What happened to one upstream exchange.
public struct UpstreamOutcome: Sendable {
    public enum Failure: Sendable, Equatable {
        /// Refused, unreachable, reset, or an invalid answer: 502.
        case unavailable(String)
        /// Connect or total timeout: 504.
        case timedOut(String)
        /// The client went away while the body was being relayed.
        case clientGone
        /// A response hook answered a problem instead of the upstream's response.
        case refused
    }
    public var status: Int
    public var failure: Failure?
    public var target: String
    public var elapsedMs: Double
    /// The request never reached the upstream (connect refused or timed out, or the connection
    /// failed before a byte was written): any method may be retried elsewhere.
    public var notSent = false
    /// The response was swallowed (`ResponseHooks.swallow`) because the request is retried.
    public var swallowed = false
}

/// How the upstream's response reaches the client: streamed as it arrives, or collected whole
/// (up to a limit) so a response transform can rewrite it.
public enum ResponseMode {
    case stream
    case collect(limit: Int)
    /// Read the body to its end without keeping it (a transform replaces it whole).
    case discard
}

/// A request's rate-limit outcome behind one reference, for what keeps it until the response
/// ends (the request task, its log record, the response hooks): on a route without limits the
/// nil field is one word, and on a limited route the outcome is not copied into each holder.
public final class SharedRateLimitOutcome {
    public let outcome: RateLimitOutcome
    public init(_ outcome: RateLimitOutcome) { self.outcome = outcome }
}

/// Decisions taken when the upstream's status and headers are known.
public struct ResponseHooks {
    /// Stream or collect this response.
    public var mode: (_ status: Int, _ headers: HTTPHeaders) -> ResponseMode { didSet { streamsPlainly = false } }
    /// Rewrites a streamed response's status and headers before they are sent; a returned
    /// problem is answered instead and the upstream body discarded.
    public var head: ((_ status: inout Int, _ headers: inout HTTPHeaders) -> ProblemDetails?)? { didSet { streamsPlainly = false } }
    /// A collected body grew past its limit (`size` bytes with the next chunk): how to go on.
    /// `.collect` with a larger limit keeps collecting, `.stream` sends what was collected and
    /// streams the rest, `.discard` drops it; anything else (or no hook) aborts the exchange
    /// and the collected response reports `overflowed`.
    public var overflow: ((_ status: Int, _ headers: HTTPHeaders, _ size: Int) -> ResponseMode)? { didSet { streamsPlainly = false } }
    /// Swallows a response for a retry by its status alone; asked once per response, before
    /// `mode`. Setting it keeps `streamsPlainly`: it needs no header field, so a retryable
    /// request's response still goes out as the bytes that arrived.
    public var swallow: ((_ status: Int) -> Bool)?
    /// `.streaming` as it is (no hook changed but `swallow`): every response that is not
    /// swallowed is streamed and no hook looks at its headers, so the relay never builds
    /// `HTTPHeaders` for them.
    public private(set) var streamsPlainly = false
    /// The rate-limit fields the gateway adds to a streamed response (nil: none). The relay
    /// writes them as bytes after the upstream's own (``RateLimitOutcome/appendHeaderFields(to:)``);
    /// when the upstream's head holds a field of one of their names it builds `HTTPHeaders`
    /// instead and sets them there, so the gateway's value replaces the upstream's in place.
    public var rateLimitFields: SharedRateLimitOutcome?

    public init(mode: @escaping (Int, HTTPHeaders) -> ResponseMode = { _, _ in .stream },
                head: ((inout Int, inout HTTPHeaders) -> ProblemDetails?)? = nil,
                overflow: ((Int, HTTPHeaders, Int) -> ResponseMode)? = nil) {
        self.mode = mode
        self.head = head
        self.overflow = overflow
    }

    public static var streaming: ResponseHooks {
        var hooks = ResponseHooks()
        hooks.streamsPlainly = true
        return hooks
    }

    /// ``streaming``, with `fields`' RateLimit fields added to every head.
    public static func streaming(adding fields: SharedRateLimitOutcome) -> ResponseHooks {
        var hooks = streaming
        hooks.rateLimitFields = fields
        return hooks
    }
}

/// One request to send upstream.
public struct UpstreamRequest {
    public var method: String
    public var url: String
    public var headers: HTTPHeaders
    /// Body length announced by nginx; nil or 0 means no body.
    public var bodyLength: Int64?
    public var connectTimeoutMs: Int
    public var timeoutMs: Int
    /// Whether the response's `X-Accel-Buffering` is passed to nginx (the upstream's
    /// `x_accel_buffering`).
    public var allowAccelBuffering = true
    /// The `Host` to send instead of the target's (a transform's `host.set`).
    public var host: String?

    public init(method: String, url: String, headers: HTTPHeaders, bodyLength: Int64?, connectTimeoutMs: Int, timeoutMs: Int) {
        self.method = method
        self.url = url
        self.headers = headers
        self.bodyLength = bodyLength
        self.connectTimeoutMs = connectTimeoutMs
        self.timeoutMs = timeoutMs
    }
}

/// A response collected whole for transformation.
public struct CollectedResponse {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// True when the body exceeded the collection limit; `body` then holds only its start.
    public var overflowed: Bool
    /// True when the body was read and dropped (`ResponseMode.discard`); `body` is empty.
    public var discarded = false
}
