/// Renders a `MetricsSnapshot` in the Prometheus text exposition format 0.0.4
/// (`text/plain; version=0.0.4`). Series appear once they have counted something; route and
/// limit labels come from the name tables, never from request data, so the number of series
/// is bounded by the file's slots.
public enum PrometheusText {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public static func render(_ s: MetricsSnapshot, version: String) -> String {
        var out = ""
        out.reserveCapacity(16 * 1024)
        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        func sample(_ name: String, _ labels: [(String, String)], _ value: String) {
            out += name
            if !labels.isEmpty {
                out += "{"
                out += labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",")
                out += "}"
            }
            out += " " + value + "\n"
        }
        let L = MetricsLayout.self
        let routeSlots = (0..<s.routes.count).compactMap { slot in s.routeLabel(slot).map { (slot, $0) } }

        family("portcullis_info", "gauge", "The gateway instance (value 1).")
        sample("portcullis_info", [("version", version), ("master_pid", String(s.header(.masterPid)))], "1")
        family("portcullis_start_time_seconds", "gauge", "When the master started (Unix time).")
        sample("portcullis_start_time_seconds", [], String(s.header(.startedUnix)))
        family("portcullis_metrics_enabled", "gauge", "1 when the running configuration records request metrics (metrics.enabled).")
        sample("portcullis_metrics_enabled", [], String(s.header(.metricsEnabled)))

        family("portcullis_requests_total", "counter", "Requests answered, by route and status class.")
        for (slot, route) in routeSlots {
            for c in 0..<L.statusClasses.count {
                let n = s.requests(route: slot, statusClass: c)
                if n > 0 { sample("portcullis_requests_total", [("route", route), ("class", L.statusClasses[c])], String(n)) }
            }
        }
        for (name, upstream, help) in [("portcullis_request_duration_seconds", false, "Time from the request's arrival at the worker to its last byte, by route and status class."),
                                       ("portcullis_upstream_duration_seconds", true, "Time of the upstream exchange, by route and status class of the answer.")] {
            family(name, "histogram", help)
            for (slot, route) in routeSlots {
                for c in 0..<L.statusClasses.count {
                    let base = c * L.classWords + (upstream ? L.histogramWords : 0)
                    let words = s.routes[slot]
                    let total = words[base..<base + L.bucketCount].reduce(0, &+)
                    guard total > 0 else { continue }
                    var cumulative: UInt64 = 0
                    for b in 0..<L.bucketCount {
                        cumulative &+= words[base + b]
                        let le = b < L.bucketBoundsMicros.count ? seconds(micros: L.bucketBoundsMicros[b]) : "+Inf"
                        sample(name + "_bucket", [("route", route), ("class", L.statusClasses[c]), ("le", le)], String(cumulative))
                    }
                    sample(name + "_sum", [("route", route), ("class", L.statusClasses[c])], seconds(micros: words[base + L.bucketCount]))
                    sample(name + "_count", [("route", route), ("class", L.statusClasses[c])], String(total))
                }
            }
        }

        let authBase = L.statusClasses.count * L.classWords
        family("portcullis_auth_failures_total", "counter", "Requests refused by authentication, by route and reason.")
        for (slot, route) in routeSlots {
            for (r, reason) in L.authReasons.enumerated() where s.routes[slot][authBase + r] > 0 {
                sample("portcullis_auth_failures_total", [("route", route), ("reason", reason)], String(s.routes[slot][authBase + r]))
            }
        }
        family("portcullis_rate_limited_total", "counter", "Requests refused by a rate limit, by route and the limit that refused them.")
        for (slot, count) in s.limits.enumerated() where count > 0 {
            let (route, limit) = MetricsNames.labels(slot == L.otherLimit ? nil : s.limitNames[slot])
            sample("portcullis_rate_limited_total", [("route", route), ("limit", limit)], String(count))
        }
        family("portcullis_transform_errors_total", "counter", "Requests whose transformation failed, by route.")
        for (slot, route) in routeSlots where s.routes[slot][authBase + L.authReasons.count] > 0 {
            sample("portcullis_transform_errors_total", [("route", route)], String(s.routes[slot][authBase + L.authReasons.count]))
        }

        renderTargets(s, family: family, sample: sample)

        family("portcullis_workers", "gauge", "Worker processes, by state (ready: serving; desired: the pool's target size).")
        sample("portcullis_workers", [("state", "ready")], String(s.header(.workersReady)))
        sample("portcullis_workers", [("state", "desired")], String(s.header(.workersDesired)))
        family("portcullis_requests_in_flight", "gauge", "Requests being served, by worker.")
        for w in s.workers { sample("portcullis_requests_in_flight", [("pid", String(w.pid))], String(w.inFlight)) }
        family("portcullis_loops", "gauge", "Event loops (threads) of the live workers, by state (total; busy: serving at least one request, scoreboard loops only).")
        sample("portcullis_loops", [("state", "total")], String(s.workers.reduce(0) { $0 + $1.loops }))
        sample("portcullis_loops", [("state", "busy")], String(s.workers.reduce(0) { $0 + $1.scoreboard.filter { $0.inFlight > 0 }.count }))
        family("portcullis_loop_requests_in_flight", "gauge", "Scoreboard: requests in flight on each event loop (the first 16 loops of a worker).")
        for w in s.workers {
            for (i, loop) in w.scoreboard.enumerated() {
                sample("portcullis_loop_requests_in_flight", [("pid", String(w.pid)), ("loop", String(i))], String(loop.inFlight))
            }
        }
        family("portcullis_loop_oldest_request_seconds", "gauge", "Scoreboard: age of the oldest request in flight on a busy loop, with its route.")
        for w in s.workers {
            for (i, loop) in w.scoreboard.enumerated() {
                guard let route = loop.route, let label = s.routeLabel(route) else { continue }
                let age = s.nowNanos > loop.sinceNanos ? s.nowNanos - loop.sinceNanos : 0
                sample("portcullis_loop_oldest_request_seconds", [("pid", String(w.pid)), ("loop", String(i)), ("route", label)],
                       seconds(micros: age / 1000))
            }
        }
        family("portcullis_fastcgi_connections", "gauge", "FastCGI connections from nginx kept open, by worker.")
        for w in s.workers { sample("portcullis_fastcgi_connections", [("pid", String(w.pid))], String(w.keptConnections)) }
        family("portcullis_access_log_dropped_lines_total", "counter", "Access-log lines dropped because the log buffer was full.")
        sample("portcullis_access_log_dropped_lines_total", [], String(s.accessLogDropped))
        family("portcullis_config_generation", "gauge", "Generation of the configuration being served (1 at start, +1 per reload).")
        sample("portcullis_config_generation", [], String(s.header(.generation)))
        family("portcullis_reloads_total", "counter", "Reloads, by result (ok: applied; refused: the running configuration kept serving).")
        sample("portcullis_reloads_total", [("result", "ok")], String(s.header(.reloadsOK)))
        sample("portcullis_reloads_total", [("result", "refused")], String(s.header(.reloadsFailed)))
        if let t = s.rateTable {
            family("portcullis_rate_table_slots", "gauge", "Slots of the shared-memory rate-limit table.")
            sample("portcullis_rate_table_slots", [], String(t.slots))
            family("portcullis_rate_table_used_slots", "gauge", "Slots of the rate-limit table that ever held a key.")
            sample("portcullis_rate_table_used_slots", [], String(t.used))
            family("portcullis_rate_table_evictions_total", "counter", "Live rate-limit counters pushed out to make room.")
            sample("portcullis_rate_table_evictions_total", [], String(t.evictions))
            family("portcullis_rate_limit_store_failures_total", "counter", "Failed calls to the Redis rate-limit store.")
            sample("portcullis_rate_limit_store_failures_total", [], String(t.storeFailures))
            family("portcullis_rate_limit_degraded_decisions_total", "counter", "Rate-limit decisions made by a failure policy while Redis was unavailable.")
            sample("portcullis_rate_limit_degraded_decisions_total", [], String(t.degradedDecisions))
        }
        family("portcullis_rate_limit_degraded_seconds_total", "counter", "Seconds during which at least one event loop decided its Redis limits by their failure policy (Redis unavailable).")
        sample("portcullis_rate_limit_degraded_seconds_total", [], seconds(micros: s.redisDegradedMs * 1000))
        return out
    }

    /// Per upstream target: the counters (targets the running configuration names always, others
    /// once they counted something), then the live gauges of the served targets.
    private static func renderTargets(_ s: MetricsSnapshot, family: (String, String, String) -> Void,
                                      sample: (String, [(String, String)], String) -> Void) {
        let slots = (0..<s.targets.count).filter { slot in
            s.targetStates[slot] != nil || s.targets[slot].contains { $0 > 0 }
        }
        let labels = slots.map { slot -> (Int, [(String, String)]) in
            let (upstream, target) = MetricsNames.labels(slot == MetricsLayout.otherTarget ? nil : s.targetNames[slot])
            return (slot, [("upstream", upstream), ("target", target)])
        }
        for (counter, name, help) in [
            (MetricsLayout.TargetCounter.requests, "portcullis_upstream_requests_total", "Tries sent to an upstream target (each retry is one more try)."),
            (.failures, "portcullis_upstream_failures_total", "Tries that failed: refused, reset, timed out, or answered a status the breaker counts as a failure."),
            (.retries, "portcullis_upstream_retries_total", "Tries on a target after which the request was tried again."),
        ] {
            family(name, "counter", help)
            for (slot, l) in labels { sample(name, l, String(s.targets[slot][counter.rawValue])) }
        }
        let served = labels.compactMap { slot, l in s.targetStates[slot].map { (l, $0) } }
        family("portcullis_upstream_in_flight", "gauge", "Requests in flight to an upstream target, across the instance.")
        for (l, state) in served { sample("portcullis_upstream_in_flight", l, String(state.inFlight)) }
        family("portcullis_upstream_up", "gauge", "1 while an upstream target is healthy (its health checks pass, or it has none), 0 while it is taken out.")
        for (l, state) in served { sample("portcullis_upstream_up", l, state.health.healthy ? "1" : "0") }
        family("portcullis_upstream_breaker_state", "gauge", "An upstream target's circuit breaker: 1 for its current state (closed, open, half_open), 0 for the others.")
        for (l, state) in served {
            for each in BreakerWord.State.allCases {
                sample("portcullis_upstream_breaker_state", l + [("state", each.name)], state.breaker.state == each ? "1" : "0")
            }
        }
    }

    /// µs as seconds with no float rounding noise ("0.0001", "2.5", "30").
    static func seconds(micros: UInt64) -> String {
        let whole = micros / 1_000_000, frac = micros % 1_000_000
        guard frac > 0 else { return String(whole) }
        var digits = String(frac)
        digits = String(repeating: "0", count: 6 - digits.count) + digits
        while digits.hasSuffix("0") { digits.removeLast() }
        return "\(whole).\(digits)"
    }

    /// Label values escape backslash, double quote and line feed.
    static func escape(_ value: String) -> String {
        guard value.contains(where: { $0 == "\\" || $0 == "\"" || $0 == "\n" }) else { return value }
        var out = ""
        for c in value {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }
}
