/// The instance's own health endpoint, for the load balancer in front of several instances.
public enum InstanceHealth {
    public static let path = "/_portcullis/health"

    /// 503 with the reason (`draining`, `redis_unreachable`) as `state`.
    public static func unavailable(_ state: String) -> ProblemDetails {
        ProblemDetails(status: 503, type: "instance-unavailable", title: "Service Unavailable",
                       detail: "this gateway instance cannot serve: \(state.replacingOccurrences(of: "_", with: " "))",
                       extensions: JSONObject([("state", .string(state))]))
    }
}
