// Fuzz builds compile RequestDecoder.swift without the rest of PortcullisRuntime (which needs
// libfcgi); its test-only `decode(_ params: [FastCGIParam])` needs this type.
public struct FastCGIParam: Sendable {
    public var name: String
    public var value: String
}
