/// The gateway's version, as `portcullis version` prints it and `portcullis_info` reports it.
public enum PortcullisVersion {
    public static let current = "0.1.0"
}
