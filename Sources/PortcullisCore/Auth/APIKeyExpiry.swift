import Foundation

/// API keys that have expired or will within a warning period: what `check` warns about and
/// `status` lists, so that a key is rotated before its clients start getting 401.
public struct ExpiringAPIKey: Sendable, Equatable {
    public let consumerId: String
    public let keyId: String
    /// Unix seconds.
    public let expires: Int64
    public let expired: Bool

    /// One line for the operator: `consumer "c" key "k" expired at T` / `expires at T (in N days)`.
    public func describe(now: Int64) -> String {
        let at = RFC3339.format(Date(timeIntervalSince1970: TimeInterval(expires)))
        if expired { return "consumer \"\(consumerId)\" API key \"\(keyId)\" expired at \(at)" }
        let days = (expires - now) / 86_400
        return "consumer \"\(consumerId)\" API key \"\(keyId)\" expires at \(at) (in \(days == 0 ? "less than a day" : "\(days) day\(days == 1 ? "" : "s")"))"
    }

    /// As `status --json` lists it.
    public var json: JSONValue {
        .object(JSONObject([("consumer", .string(consumerId)), ("key_id", .string(keyId)),
                            ("expires", .string(RFC3339.format(Date(timeIntervalSince1970: TimeInterval(expires))))),
                            ("expired", .bool(expired))]))
    }
}

public enum APIKeyExpiry {
    /// Default warning period of `check` and `status`.
    public static let defaultWarningDays = 14

    /// Keys of `consumers` expired at `now` or expiring within `warningDays`, soonest first.
    public static func expiring(_ consumers: [Consumer], now: Int64, warningDays: Int) -> [ExpiringAPIKey] {
        let horizon = now + Int64(warningDays) * 86_400
        var found: [ExpiringAPIKey] = []
        for consumer in consumers {
            for key in consumer.apiKeys {
                guard let expires = key.expires, expires <= horizon else { continue }
                found.append(ExpiringAPIKey(consumerId: consumer.id, keyId: key.id, expires: expires, expired: expires <= now))
            }
        }
        return found.sorted { ($0.expires, $0.consumerId, $0.keyId) < ($1.expires, $1.consumerId, $1.keyId) }
    }
}
