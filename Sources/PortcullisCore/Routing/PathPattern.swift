/// Route path syntax: `/users/{id}/orders`. A segment is either literal or a whole `{param}`.
/// Empty segments (duplicate or trailing slashes) never affect matching.
public enum PathPattern {
    public enum Segment: Sendable, Equatable {
        case literal(String)
        case param(String)
    }

    public static func segments(of pattern: String) -> [Segment] {
        splitPath(pattern).map { seg in
            if seg.hasPrefix("{") && seg.hasSuffix("}") && seg.count > 2 {
                return .param(String(seg.dropFirst().dropLast()))
            }
            return .literal(String(seg))
        }
    }

    /// Non-empty segments of a path, split on the byte `/` as nginx splits (a `Character`
    /// split would not split `/` followed by a combining mark such as U+0338).
    public static func splitPath(_ path: String) -> [Substring] {
        var segments: [Substring] = []
        segments.reserveCapacity(4)  // one allocation for a typical path, not one per segment
        // On the contiguous bytes of a native string (stepping the view's indices cost about
        // forty instructions a byte); the segments are cut at their byte offsets.
        let view = path.utf8
        let split: Void? = view.withContiguousStorageIfAvailable { bytes in
            func segment(_ from: Int, _ to: Int) -> Substring {
                path[view.index(view.startIndex, offsetBy: from)..<view.index(view.startIndex, offsetBy: to)]
            }
            var start = 0
            for i in 0..<bytes.count where bytes[i] == 0x2F {
                if start != i { segments.append(segment(start, i)) }
                start = i + 1
            }
            if start != bytes.count { segments.append(segment(start, bytes.count)) }
        }
        if split != nil { return segments }
        let bytes = path.utf8
        var start = bytes.startIndex, i = start
        while i != bytes.endIndex {
            if bytes[i] == 0x2F {
                if start != i { segments.append(path[start..<i]) }
                start = bytes.index(after: i)
            }
            i = bytes.index(after: i)
        }
        if start != bytes.endIndex { segments.append(path[start...]) }
        return segments
    }

    public static func paramNames(in pattern: String) -> [String] {
        var names: [String] = []
        var rest = Substring(pattern)
        while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
            names.append(String(rest[rest.index(after: open)..<close]))
            rest = rest[rest.index(after: close)...]
        }
        return names
    }

    /// Why `pattern` is not a valid route path, or nil.
    public static func validate(_ pattern: String) -> String? {
        guard pattern.hasPrefix("/") else { return "must start with \"/\"" }
        if pattern.contains("?") || pattern.contains("#") { return "must not contain a query or fragment" }
        var seen = Set<String>()
        for seg in splitPath(pattern) {
            let hasBrace = seg.contains("{") || seg.contains("}")
            guard hasBrace else { continue }
            guard seg.hasPrefix("{"), seg.hasSuffix("}"), seg.count > 2,
                  !seg.dropFirst().dropLast().contains(where: { $0 == "{" || $0 == "}" }) else {
                return "segment \"\(seg)\" must be literal or a whole {param}"
            }
            let name = String(seg.dropFirst().dropLast())
            guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                return "parameter name \"\(name)\" may hold only letters, digits and _"
            }
            if !seen.insert(name).inserted { return "parameter {\(name)} appears twice" }
        }
        return nil
    }

    /// Fills `{param}` placeholders of `template` from `params`.
    public static func fill(_ template: String, params: [String: String]) -> String {
        var out = ""
        var rest = Substring(template)
        while let open = rest.firstIndex(of: "{"), let close = rest[open...].firstIndex(of: "}") {
            out += rest[..<open]
            out += params[String(rest[rest.index(after: open)..<close])] ?? ""
            rest = rest[rest.index(after: close)...]
        }
        out += rest
        return out
    }
}
