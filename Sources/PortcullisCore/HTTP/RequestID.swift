/// The correlation id: a client's `X-Request-ID` is kept when it is 1–128 characters of
/// `[A-Za-z0-9._-]`; otherwise nginx's `$request_id` is used.
public enum RequestID {
    public static func isAcceptable(_ candidate: String) -> Bool {
        let bytes = candidate.utf8
        guard !bytes.isEmpty && bytes.count <= 128 else { return false }
        return bytes.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2E || c == 0x5F || c == 0x2D
        }
    }

    public static func choose(clientSupplied: String?, nginxGenerated: String) -> String {
        if let clientSupplied, isAcceptable(clientSupplied) { return clientSupplied }
        return nginxGenerated
    }
}
