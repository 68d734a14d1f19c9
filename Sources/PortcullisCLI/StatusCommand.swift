import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisPool
import PortcullisRuntime

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the master, its workers and their pids.")

    @OptionGroup var options: ConfigOption
    @Flag(help: "Print the state as JSON.") var json = false

    func run() throws {
        let paths = RuntimePaths.locate(configPath: options.config)
        guard let pid = paths.runningMasterPid(), let state = paths.readState() else {
            if json { print("{\"running\":false}") } else { print("not running") }
            throw ExitCode(3)
        }
        let table = try? SharedMemoryRateTable.open(path: SharedMemoryRateTable.defaultPath(runtimeDirectory: paths.directory))
        let upstreams = upstreamReport(state, runtimeDirectory: paths.directory)
        if json {
            var object = state.objectValue ?? JSONObject()
            object["running"] = true
            if let upstreams { object["upstreams"] = .object(upstreams) }
            if let table {
                let stats = table.stats
                object["rate_limit_table"] = .object(JSONObject([
                    ("slots", .int(Int64(table.slots))), ("insertions", .int(Int64(stats.insertions))),
                    ("evictions", .int(Int64(stats.evictions))), ("store_failures", .int(Int64(stats.storeFailures))),
                    ("degraded_decisions", .int(Int64(stats.degradedDecisions))),
                ]))
            }
            print(JSONCodec.serialize(.object(object)))
            return
        }
        let workers = state["workers"]?.arrayValue ?? []
        print("master \(pid), generation \(state["generation"]?.intValue ?? 0), socket \(state["socket"]?.stringValue ?? "?")")
        print("workers: \(workers.count) running, \(state["desired_workers"]?.intValue ?? 0) desired, \(state["threads"]?.intValue ?? 0) event-loop threads each")
        for w in workers {
            let phase = w["retiring"]?.boolValue == true ? " (retiring)" : w["ready"]?.boolValue == true ? "" : " (starting)"
            print("  pid \(w["pid"]?.intValue ?? 0)  generation \(w["generation"]?.intValue ?? 0)  since \(w["started_at"]?.stringValue ?? "")\(phase)")
        }
        if let table {
            let stats = table.stats
            print("rate-limit table: \(table.slots) slots, \(stats.insertions) insertions, \(stats.evictions) evictions, "
                  + "\(stats.storeFailures) Redis failures, \(stats.degradedDecisions) degraded decisions")
        }
        for (name, targets) in upstreams?.entries ?? [] {
            print("upstream \(name):")
            for t in targets.arrayValue ?? [] {
                var line = "  \(t["target"]?.stringValue ?? "")  \(t["health"]?.stringValue ?? "")  breaker \(t["breaker"]?.stringValue ?? "")"
                if let ms = t["open_for_ms"]?.intValue { line += " (\(ms) ms left)" }
                line += "  \(t["in_flight"]?.intValue ?? 0) in flight"
                print(line)
            }
        }
        if let reload = state["last_reload"] {
            print("last reload: \(reload["ok"]?.boolValue == true ? "ok" : "refused") at \(reload["at"]?.stringValue ?? "")")
        }
    }

    /// Each upstream's targets (from the state file) with their live health, breaker state and
    /// in-flight count (from the shared upstream state).
    private func upstreamReport(_ state: JSONValue, runtimeDirectory: String) -> JSONObject? {
        guard let listed = state["upstreams"]?.objectValue,
              let table = try? UpstreamStateTable.open(path: UpstreamStateTable.defaultPath(runtimeDirectory: runtimeDirectory)) else { return nil }
        return JSONObject(listed.entries.map { name, targets in
            (name, .array((targets.arrayValue ?? []).compactMap(\.stringValue).map { .object(table.report(upstream: name, target: $0)) }))
        })
    }
}
