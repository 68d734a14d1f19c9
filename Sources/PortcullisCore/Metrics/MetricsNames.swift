/// Which slot of the metrics file counts which route and which limit. The master assigns
/// slots when a configuration is loaded (at start and on every reload) and never reassigns
/// one, so a name keeps its counters across reloads; names beyond the table's slots share
/// the `other` slot. Pure: the caller reads and writes the names in shared memory.
public enum MetricsNames {
    /// The label of a route's limit in the limit name table.
    public static func limitKey(route: String, limit: String) -> String { route + "\t" + limit }

    /// The label of an upstream's target in the target name table.
    public static func targetKey(upstream: String, target: String) -> String { upstream + "\t" + target }

    /// Every target of a configuration's upstreams as `targetKey`s, grouped by upstream in
    /// name order (the order in which a worker indexes its upstreams).
    public static func targetKeys(_ config: GatewayConfig) -> [[String]] {
        config.upstreams.keys.sorted().map { name in config.upstreams[name]!.targets.map { targetKey(upstream: name, target: $0) } }
    }

    /// The two labels of a `route\tlimit` or `upstream\ttarget` key; the overflow slot (nil)
    /// is `_other`/`_other`.
    public static func labels(_ key: String?) -> (String, String) {
        guard let key, let tab = key.firstIndex(of: "\t") else { return (MetricsLayout.otherName, MetricsLayout.otherName) }
        return (String(key[..<tab]), String(key[key.index(after: tab)...]))
    }

    /// Slots for `wanted` names in a table whose slots hold `existing` (nil: free), keeping
    /// slots below `firstFree` reserved. Returns the slot of each wanted name (`overflow` when
    /// the table is full or the name is too long) and the names to write into free slots.
    public static func assign(_ wanted: [String], existing: [String?], firstFree: Int, overflow: Int)
        -> (slots: [Int], added: [(slot: Int, name: String)]) {
        var index: [String: Int] = [:]
        for (slot, name) in existing.enumerated() where slot >= firstFree { if let name { index[name] = slot } }
        var free = (firstFree..<existing.count).filter { existing[$0] == nil }[...]
        var added: [(slot: Int, name: String)] = []
        let slots = wanted.map { name -> Int in
            if let slot = index[name] { return slot }
            guard name.utf8.count <= MetricsLayout.maxNameBytes, !name.utf8.contains(0), let slot = free.popFirst() else {
                return overflow
            }
            index[name] = slot
            added.append((slot, name))
            return slot
        }
        return (slots, added)
    }

    /// The slot of each name in a table (`overflow` when absent), as a worker maps its
    /// configuration's routes and limits.
    public static func lookup(_ wanted: [String], in existing: [String?], firstFree: Int, overflow: Int) -> [Int] {
        var index: [String: Int] = [:]
        for (slot, name) in existing.enumerated() where slot >= firstFree { if let name { index[name] = slot } }
        return wanted.map { index[$0] ?? overflow }
    }
}
