/// The `metrics` section: whether workers record request metrics, and the slow-request
/// threshold of routes that set none.
public struct MetricsSettings: Sendable, Equatable {
    /// Record requests in the metrics file (`metrics.enabled`, default true). Off, workers
    /// count nothing and the scoreboard stays empty; the exposition still serves the instance's
    /// figures.
    public var enabled = true
    /// Default of a route's `slow_ms` (nil: no slow-request log unless a route sets one).
    public var slowMs: Int?
    public init() {}

    static func read(_ node: ConfigNode) -> MetricsSettings {
        var m = MetricsSettings()
        guard node.isPresent, node.object() != nil else { return m }
        node.rejectUnknownKeys(["enabled", "slow_ms"])
        if let v = node["enabled"].bool() { m.enabled = v }
        if let v = node["slow_ms"].int(min: 0, max: 3_600_000) { m.slowMs = Int(v) }
        return m
    }
}
