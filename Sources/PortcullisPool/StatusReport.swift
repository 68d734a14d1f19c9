import Foundation
import PortcullisCore
import PortcullisRuntime

/// What `portcullis status` shows: the state the master publishes, completed with figures read
/// live (worker RSS, the shared-memory rate table). It is one JSON object (`--json`) and the
/// text is rendered from it section by section; a part of the gateway that has something to
/// report adds a `StatusSection` to `sections`.
public struct StatusReport {
    public private(set) var document: JSONObject

    /// One part of the report: `collect` adds its member(s) to the document, `render` turns the
    /// whole document into that part's text lines.
    public struct Section: Sendable {
        public let collect: @Sendable (_ context: Context, _ document: inout JSONObject) -> Void
        public let render: @Sendable (_ document: JSONObject) -> [String]
    }

    /// What sections collect from.
    public struct Context: Sendable {
        public let paths: RuntimePaths
        /// API keys expiring within this many days are listed.
        public let keyWarningDays: Int
        public let now: Int64
    }

    /// The sections, in the order the text shows them.
    public static let sections: [Section] = [.master, .workers, .workerFailures, .rateTable, .upstreams, .keyExpiry, .lastReload, .lastScale]

    /// The report of the master running with `paths`; nil when none runs.
    public init?(paths: RuntimePaths, keyWarningDays: Int = APIKeyExpiry.defaultWarningDays) {
        guard let pid = paths.runningMasterPid(), var document = paths.readState()?.objectValue else { return nil }
        document["running"] = true
        document["master_pid"] = .int(Int64(pid))
        let context = Context(paths: paths, keyWarningDays: keyWarningDays, now: Int64(time(nil)))
        for section in Self.sections { section.collect(context, &document) }
        self.document = document
    }

    public var text: String { Self.sections.flatMap { $0.render(document) }.joined(separator: "\n") }

    /// Resident set size of a process in bytes (VmRSS), nil if it is gone.
    static func residentBytes(_ pid: Int64) -> Int64? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kb = Int64(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return nil }
        return kb * 1024
    }

    static func mebibytes(_ bytes: Int64?) -> String {
        bytes.map { String(format: "%.1f MiB", Double($0) / 1_048_576) } ?? "?"
    }
}

extension StatusReport.Section {
    static let master = Self(collect: { _, _ in }, render: { d in
        ["master \(d["master_pid"]?.intValue ?? 0), generation \(d["generation"]?.intValue ?? 0), socket \(d["socket"]?.stringValue ?? "?")"]
    })

    /// Each worker's state, RSS and requests served.
    static let workers = Self(collect: { context, document in
        let list = document["workers"]?.arrayValue ?? []
        let table = try? WorkerTable.open(path: WorkerTable.defaultPath(runtimeDirectory: context.paths.directory))
        document["workers"] = .array(list.map { worker in
            guard var w = worker.objectValue, let pid = w["pid"]?.intValue else { return worker }
            w["state"] = .string(w["retiring"]?.boolValue == true ? "retiring" : w["recycling"]?.boolValue == true ? "recycling"
                                 : w["ready"]?.boolValue == true ? "ready" : "starting")
            w["rss_bytes"] = StatusReport.residentBytes(pid).map { .int($0) } ?? .null
            if let slot = w["slot"]?.intValue, let entry = table?.read(slot: Int(slot)), entry.pid == pid {
                w["requests"] = .int(Int64(entry.requests))
                w["busy_threads"] = .int(Int64(entry.busyLoops))
            }
            return .object(w)
        })
    }, render: { d in
        let workers = d["workers"]?.arrayValue ?? []
        var lines = ["workers: \(workers.count) running, \(d["desired_workers"]?.intValue ?? 0) desired, "
                     + "\(d["threads"]?.intValue ?? 0) event-loop threads each"]
        lines.append("  pid       gen  state     requests  busy  rss         since")
        for w in workers {
            let pid = String(w["pid"]?.intValue ?? 0).padding(toLength: 9, withPad: " ", startingAt: 0)
            let gen = String(w["generation"]?.intValue ?? 0).padding(toLength: 4, withPad: " ", startingAt: 0)
            let state = (w["state"]?.stringValue ?? "?").padding(toLength: 9, withPad: " ", startingAt: 0)
            let served = (w["requests"]?.intValue.map(String.init) ?? "-").padding(toLength: 9, withPad: " ", startingAt: 0)
            let busy = (w["busy_threads"]?.intValue.map(String.init) ?? "-").padding(toLength: 5, withPad: " ", startingAt: 0)
            let rss = StatusReport.mebibytes(w["rss_bytes"]?.intValue).padding(toLength: 11, withPad: " ", startingAt: 0)
            lines.append("  \(pid) \(gen) \(state) \(served) \(busy) \(rss) \(w["started_at"]?.stringValue ?? "")")
        }
        return lines
    })

    static let workerFailures = Self(collect: { _, _ in }, render: { d in
        guard let failures = d["worker_failures"], let last = failures["last"] else { return [] }
        let how = last["exit_code"]?.intValue.map { "exit \($0)" } ?? last["signal"]?.intValue.map { "signal \($0)" } ?? "?"
        var line = "last worker failure: pid \(last["pid"]?.intValue ?? 0) \(how) at \(last["at"]?.stringValue ?? "")"
        if let error = last["error"]?.stringValue { line += ": \(error)" }
        var lines = [line]
        let inARow = failures["in_a_row"]?.intValue ?? 0
        if inARow > 1 {
            lines.append("crash loop: \(inARow) failures in a row, respawning after \(failures["respawn_delay_ms"]?.intValue ?? 0) ms")
        }
        return lines
    })

    static let rateTable = Self(collect: { context, document in
        guard let table = try? SharedMemoryRateTable.open(path: SharedMemoryRateTable.defaultPath(runtimeDirectory: context.paths.directory))
        else { return }
        let stats = table.stats
        document["rate_limit_table"] = .object(JSONObject([
            ("slots", .int(Int64(table.slots))), ("insertions", .int(Int64(stats.insertions))),
            ("evictions", .int(Int64(stats.evictions))), ("store_failures", .int(Int64(stats.storeFailures))),
            ("degraded_decisions", .int(Int64(stats.degradedDecisions))),
        ]))
    }, render: { d in
        guard let t = d["rate_limit_table"] else { return [] }
        return ["rate-limit table: \(t["slots"]?.intValue ?? 0) slots, \(t["insertions"]?.intValue ?? 0) insertions, "
                + "\(t["evictions"]?.intValue ?? 0) evictions, \(t["store_failures"]?.intValue ?? 0) Redis failures, "
                + "\(t["degraded_decisions"]?.intValue ?? 0) degraded decisions"]
    })

    /// API keys of the running generation (its bundle) that expired or expire soon.
    static let keyExpiry = Self(collect: { context, document in
        guard let generation = document["generation"]?.intValue,
              let bundle = try? GatewayLoader.readBundle(context.paths.bundleFile(generation: Int(generation))),
              let loaded = try? GatewayLoader.load(bundle: bundle) else { return }
        let keys = APIKeyExpiry.expiring(loaded.config.consumers, now: context.now, warningDays: context.keyWarningDays)
        document["api_keys_expiring"] = .array(keys.map(\.json))
    }, render: { d in
        (d["api_keys_expiring"]?.arrayValue ?? []).map { k in
            "api key \(k["consumer"]?.stringValue ?? "?")/\(k["key_id"]?.stringValue ?? "?") "
                + (k["expired"]?.boolValue == true ? "expired" : "expires") + " at \(k["expires"]?.stringValue ?? "?")"
        }
    })

    static let lastReload = Self(collect: { _, _ in }, render: { d in
        guard let reload = d["last_reload"] else { return [] }
        let at = reload["at"]?.stringValue ?? ""
        if reload["ok"]?.boolValue == true { return ["last reload: ok at \(at)"] }
        // A reload by SIGHUP, `systemctl reload` or `plugins_watch` has no CLI to print why.
        return ["last reload: refused at \(at):"] + (reload["errors"]?.arrayValue ?? []).map { "  \($0.stringValue ?? "")" }
    })

    static let lastScale = Self(collect: { _, _ in }, render: { d in
        guard let scale = d["last_scale"] else { return [] }
        let at = scale["at"]?.stringValue ?? ""
        if scale["ok"]?.boolValue == true { return ["last scale: ok, \(scale["workers"]?.intValue ?? 0) workers at \(at)"] }
        return ["last scale: to \(scale["asked"]?.intValue ?? 0) workers withdrawn at \(at), kept \(scale["workers"]?.intValue ?? 0): "
                + (scale["reason"]?.stringValue ?? "")]
    })
}
