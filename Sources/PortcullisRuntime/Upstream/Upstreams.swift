import Glibc
import PortcullisCore

/// The upstream clients of one loop, picked per target: plain-HTTP targets with an IP literal
/// or `localhost` go through the lean `HTTP1Client` (fewer syscalls, no DNS on the loop);
/// https and host names through libcurl's `UpstreamClient`.
public final class Upstreams {
    /// `PORTCULLIS_UPSTREAM_CLIENT=curl` sends every target through libcurl: a diagnostic
    /// switch (A/B measurements, ruling the lean client out), read once per process.
    public static let curlOnlyFromEnvironment: Bool = {
        guard let value = getenv("PORTCULLIS_UPSTREAM_CLIENT") else { return false }
        return String(cString: value) == "curl"
    }()

    private let loop: EventLoop
    private let curlOnly: Bool
    public let http1: HTTP1Client
    /// Created on first use: a loop whose targets are all plain HTTP never builds a multi handle.
    public private(set) lazy var curl = UpstreamClient(loop: loop)

    public init(loop: EventLoop, curlOnly: Bool = Upstreams.curlOnlyFromEnvironment) {
        self.loop = loop
        self.curlOnly = curlOnly
        http1 = HTTP1Client(loop: loop)
    }

    /// Starts `request` on the client its URL calls for; same contract as `UpstreamClient.start`.
    public func start(_ request: UpstreamRequest, body: BodySource?, sink: ResponseSink, hooks: ResponseHooks,
                      requestId: String, completion: @escaping (UpstreamOutcome, CollectedResponse?) -> Void) {
        if !curlOnly && http1.startIfHandled(request, body: body, sink: sink, hooks: hooks, requestId: requestId, completion: completion) {
            return
        }
        curl.start(request, body: body, sink: sink, hooks: hooks, requestId: requestId, completion: completion)
    }
}
