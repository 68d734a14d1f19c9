import CCurl
import CPortcullis
import Foundation
import PortcullisCore
import Synchronization

/// Keeps a `JWKSKeyStore` filled from a `jwks_url`: a background thread fetches the set at
/// start, every refresh interval, and when a token named an unknown `kid` (at most once per
/// the store's cooldown). A failed fetch or an unusable document keeps the last good set; a
/// good one is also saved to the `JWKSCache`. Proxy environment variables are ignored;
/// redirects are not followed.
public final class JWKSFetcher: Sendable {
    public let url: String
    public let store: JWKSKeyStore
    public let refreshSeconds: Int
    /// Largest JWKS document accepted.
    public let maxBytes: Int
    private let stopped = Atomic<Bool>(false)
    private let attempted = Atomic<Bool>(false)
    private let cache: JWKSCache?
    private let report: @Sendable (String) -> Void

    /// - Parameter report: receives one line per failed fetch or skipped key (for the error log).
    public init(url: String, store: JWKSKeyStore, refreshSeconds: Int, maxBytes: Int = 1 << 20, cache: JWKSCache? = nil,
                report: @escaping @Sendable (String) -> Void = { _ in }) {
        self.url = url
        self.cache = cache
        self.store = store
        self.refreshSeconds = max(1, refreshSeconds)
        self.maxBytes = maxBytes
        self.report = report
    }

    /// Creates one store and one started fetcher per distinct `jwks_url` of `settings`. Pass
    /// `sources` to `Authenticator(config:jwksSources:)`; keep `fetchers` alive and stop them
    /// when the configuration is replaced. Nothing here waits for the network: a URL that
    /// `previous` (the configuration being replaced) already fetched keeps its store, so its
    /// last good set survives the reload; a new one starts from `cache`. Every fetcher fetches
    /// at once on its own thread, so slow URLs are fetched in parallel (`awaitFirstFetch`).
    public static func startAll(for settings: AuthSettings, previous: [JWKSFetcher] = [], cache: JWKSCache? = nil,
                                report: @escaping @Sendable (String) -> Void = { _ in })
        -> (sources: [String: any JWKSSource], fetchers: [JWKSFetcher])
    {
        var sources: [String: any JWKSSource] = [:]
        var fetchers: [JWKSFetcher] = []
        for url in settings.jwksURLs {
            let refresh = settings.jwt.issuers.filter { $0.jwksURL == url }.map(\.jwksRefreshSeconds).min() ?? 300
            let store = previous.first { $0.url == url }?.store ?? JWKSKeyStore(keys: cache?.keys(for: url) ?? [])
            let fetcher = JWKSFetcher(url: url, store: store, refreshSeconds: refresh, cache: cache, report: report)
            fetcher.start()
            sources[url] = store
            fetchers.append(fetcher)
        }
        return (sources, fetchers)
    }

    /// Starts the background thread.
    public func start() {
        let thread = Thread { [self] in run() }
        thread.name = "jwks-fetcher"
        thread.start()
    }

    /// Asks the thread to end (it notices within a quarter second).
    public func stop() { stopped.store(true, ordering: .relaxed) }

    /// True once the store holds a set or the first fetch has ended (well or not).
    public var hasKeysOrTried: Bool { store.isLoaded || firstFetchEnded }

    /// The fetch the thread makes when it starts has ended.
    var firstFetchEnded: Bool { attempted.load(ordering: .acquiring) }

    /// Waits (polling) until every fetcher `hasKeysOrTried`, or until `deadline`: what a new
    /// configuration waits for before it serves, so that a reload does not serve a new
    /// issuer's tokens before its keys are in. Fetches run in parallel, so this is about the
    /// slowest URL, not their sum.
    public static func awaitFirstFetch(_ fetchers: [JWKSFetcher], deadline: ContinuousClock.Instant) {
        while ContinuousClock.now < deadline && !fetchers.allSatisfy(\.hasKeysOrTried) { usleep(20_000) }
    }

    private func run() {
        fetchNow()
        attempted.store(true, ordering: .releasing)
        var nextRefresh = Date().addingTimeInterval(TimeInterval(refreshSeconds))
        while !stopped.load(ordering: .relaxed) {
            Thread.sleep(forTimeInterval: 0.25)
            let now = Date()
            // A store that never loaded retries every cooldown instead of waiting a full period.
            let due = now >= nextRefresh || store.takeRefetchRequest()
                || (!store.isLoaded && now >= nextRefresh.addingTimeInterval(-TimeInterval(refreshSeconds) + TimeInterval(store.refetchCooldownSeconds)))
            if due {
                fetchNow()
                nextRefresh = Date().addingTimeInterval(TimeInterval(refreshSeconds))
            }
        }
    }

    /// Fetches and installs the set once; returns whether a set was installed.
    @discardableResult
    public func fetchNow() -> Bool {
        let (status, body, error) = Self.get(url, maxBytes: maxBytes)
        guard error == nil, status == 200 else {
            report("jwks \(url): fetch failed (\(error ?? "HTTP \(status)")); keeping the last good key set")
            return false
        }
        guard let document = try? JSONCodec.parse(body, rejectDuplicateKeys: true) else {
            report("jwks \(url): the response is not JSON; keeping the last good key set")
            return false
        }
        let (keys, problems) = VerificationKey.jwkSet(document)
        for p in problems { report("jwks \(url): skipped \(p)") }
        guard !keys.isEmpty else {
            report("jwks \(url): no usable key in the set; keeping the last good key set")
            return false
        }
        store.replace(keys: keys)
        cache?.save(body, for: url)
        return true
    }

    private final class Sink {
        var bytes: [UInt8] = []
        let limit: Int
        var overflow = false
        init(limit: Int) { self.limit = limit }
    }

    /// One GET with libcurl; returns (status, body, error text).
    static func get(_ url: String, maxBytes: Int) -> (Int, [UInt8], String?) {
        guard let handle = curl_easy_init() else { return (0, [], "curl_easy_init failed") }
        defer { curl_easy_cleanup(handle) }
        let sink = Sink(limit: maxBytes)
        let unmanaged = Unmanaged.passRetained(sink)
        defer { unmanaged.release() }
        _ = pc_curl_set_str(handle, CURLOPT_URL, url)
        // An empty proxy string disables proxies, including http_proxy/https_proxy variables.
        _ = pc_curl_set_str(handle, CURLOPT_PROXY, "")
        _ = pc_curl_set_long(handle, CURLOPT_FOLLOWLOCATION, 0)
        _ = pc_curl_set_long(handle, CURLOPT_NOSIGNAL, 1)
        _ = pc_curl_set_long(handle, CURLOPT_CONNECTTIMEOUT_MS, 3_000)
        _ = pc_curl_set_long(handle, CURLOPT_TIMEOUT_MS, 10_000)
        _ = pc_curl_set_str(handle, CURLOPT_PROTOCOLS_STR, "http,https")
        _ = pc_curl_set_write_cb(handle, { ptr, size, count, userdata in
            let sink = Unmanaged<Sink>.fromOpaque(userdata!).takeUnretainedValue()
            let n = size * count
            if sink.bytes.count + n > sink.limit { sink.overflow = true; return 0 }
            if let ptr { ptr.withMemoryRebound(to: UInt8.self, capacity: n) { sink.bytes.append(contentsOf: UnsafeBufferPointer(start: $0, count: n)) } }
            return n
        }, unmanaged.toOpaque())
        let rc = curl_easy_perform(handle)
        if sink.overflow { return (0, [], "the document exceeds \(maxBytes) bytes") }
        if rc != CURLE_OK { return (0, [], String(cString: curl_easy_strerror(rc))) }
        return (pc_curl_response_code(handle), sink.bytes, nil)
    }
}
