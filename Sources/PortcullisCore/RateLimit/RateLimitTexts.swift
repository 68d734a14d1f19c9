/// What the configuration fixes about one limit under one set of parameters (its base, a plan
/// of `groups`, or the `local` fallback's division): the text every request of it would
/// otherwise format again. Built once when the configuration is loaded (``RateLimitSpec`` keeps
/// one per set of parameters), so a request only writes its own numbers and key values. A
/// class: results carry it from the decision to the head and the log line with one reference.
public final class RateLimitTexts: Sendable, Hashable {
    /// ``StableHasher`` after the counter text's prefix `name|algorithm/limit/window_us/burst`;
    /// a request's key continues it with its values (``RateLimitKey/init(prefix:parts:subject:)``).
    let keyPrefix: StableHasher
    /// The `RateLimit-Policy` item (``RateLimitParams/policyItem(name:)``) as head bytes.
    let policyItem: [UInt8]
    /// `"name"` as head bytes, for the `RateLimit` field.
    let quotedName: [UInt8]
    /// Whether the name may stand in a head. A field holding a name that may not is left out,
    /// as ``HeaderHygiene/appendFields(_:to:)`` leaves out a field whose value is unsafe.
    let nameIsSafe: Bool
    /// The name JSON-escaped (without quotes), for the access log's `limits`.
    let logName: [UInt8]
    /// `RateLimit-Policy: <policyItem>\r\nRateLimit: "name";r=`: the head's fields from the
    /// policy to the remaining count when this limit is a request's only result (the usual
    /// route with one limit), written with one copy. Empty when the name is not safe (then
    /// neither field is written).
    let soleFields: [UInt8]

    public init(name: String, params: RateLimitParams) {
        var prefix = StableHasher()
        RateLimitKey.writePrefix(limitName: name, params: params, to: &prefix)
        keyPrefix = prefix
        // The same transformation as a `String` field written into a head (`RawText`).
        policyItem = RawText.bytes(of: params.policyItem(name: name))
        quotedName = RawText.bytes(of: "\"" + name + "\"")
        nameIsSafe = HeaderHygiene.isSafeHeaderValue(name)
        var escaped: [UInt8] = []
        JSONLineWriter.appendQuoted(name, to: &escaped)
        logName = Array(escaped.dropFirst().dropLast())
        var sole: [UInt8] = []
        if nameIsSafe {
            sole.appendASCII("RateLimit-Policy: ")
            sole.append(contentsOf: policyItem)
            sole.appendASCII("\r\nRateLimit: ")
            sole.append(contentsOf: quotedName)
            sole.appendASCII(";r=")
        }
        soleFields = sole
    }

    public static func == (a: RateLimitTexts, b: RateLimitTexts) -> Bool {
        a === b || (a.keyPrefix == b.keyPrefix && a.policyItem == b.policyItem && a.quotedName == b.quotedName
            && a.nameIsSafe == b.nameIsSafe && a.logName == b.logName)
    }

    public func hash(into h: inout Hasher) { h.combine(keyPrefix) }
}
