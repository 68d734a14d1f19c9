import PortcullisCore
import PortcullisRuntime

extension StatusReport.Section {
    /// Each upstream's targets (listed in the state file) with their live health, breaker
    /// state and in-flight count (from the shared upstream state); `--json` replaces the
    /// state file's list with that report.
    static let upstreams = Self(collect: { context, document in
        guard let listed = document["upstreams"]?.objectValue,
              let table = try? UpstreamStateTable.open(path: UpstreamStateTable.defaultPath(runtimeDirectory: context.paths.directory))
        else { return }
        document["upstreams"] = .object(JSONObject(listed.entries.map { name, targets in
            (name, .array((targets.arrayValue ?? []).compactMap(\.stringValue).map { .object(table.report(upstream: name, target: $0)) }))
        }))
    }, render: { d in
        var lines: [String] = []
        for (name, targets) in d["upstreams"]?.objectValue?.entries ?? [] {
            lines.append("upstream \(name):")
            for t in targets.arrayValue ?? [] {
                guard t.objectValue != nil else { continue }
                var line = "  \(t["target"]?.stringValue ?? "")  \(t["health"]?.stringValue ?? "")  breaker \(t["breaker"]?.stringValue ?? "")"
                if let ms = t["open_for_ms"]?.intValue { line += " (\(ms) ms left)" }
                line += "  \(t["in_flight"]?.intValue ?? 0) in flight"
                lines.append(line)
            }
        }
        return lines
    })
}
