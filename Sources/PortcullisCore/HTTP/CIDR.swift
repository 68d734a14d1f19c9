#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `2001:db8::/32`, or a single address), matched
/// against addresses as nginx writes them (`$remote_addr`). IPv4 and IPv6 never match each
/// other, except an IPv4-mapped IPv6 address (`::ffff:10.1.2.3`), which matches as its IPv4
/// address. Parsing and matching use no allocation.
public struct CIDR: Sendable, Hashable, CustomStringConvertible {
    /// The address as 16 bytes (IPv4 in the last four, with `isIPv4` set), already masked.
    let high: UInt64
    let low: UInt64
    public let isIPv4: Bool
    /// Prefix length within the family (0…32 or 0…128).
    public let prefixLength: Int

    /// Parses `address` or `address/prefix`; nil when either part is not valid or the address
    /// has bits set beyond the prefix (`10.0.0.1/8` is refused: it says something it does not mean).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = CIDR.parseAddress(String(parts[0])) else { return nil }
        let bits = address.isIPv4 ? 32 : 128
        var prefix = bits
        if parts.count == 2 {
            guard !parts[1].isEmpty, parts[1].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), parts[1].count <= 3,
                  let p = Int(parts[1]), p <= bits else { return nil }
            prefix = p
        }
        let (mh, ml) = CIDR.mask(prefix + (address.isIPv4 ? 96 : 0))
        guard address.high & ~mh == 0, address.low & ~ml == 0 else { return nil }
        high = address.high
        low = address.low
        isIPv4 = address.isIPv4
        prefixLength = prefix
    }

    /// Whether `address` (as nginx writes `$remote_addr`) lies in this network; false for text
    /// that is not an address.
    public func contains(_ address: String) -> Bool {
        guard let a = CIDR.parseAddress(address) else { return false }
        return contains(a)
    }

    /// Whether any of `networks` contains `address` (parsed once).
    public static func any(_ networks: [CIDR], contains address: String) -> Bool {
        guard let a = parseAddress(address) else { return false }
        return networks.contains { $0.contains(a) }
    }

    func contains(_ a: (high: UInt64, low: UInt64, isIPv4: Bool)) -> Bool {
        guard a.isIPv4 == isIPv4 else { return false }
        let (mh, ml) = CIDR.mask(prefixLength + (isIPv4 ? 96 : 0))
        return a.high & mh == high && a.low & ml == low
    }

    public var description: String {
        var text = [UInt8](repeating: 0, count: 64)
        var bytes = (high.bigEndian, low.bigEndian)
        let family = isIPv4 ? AF_INET : AF_INET6
        let written = withUnsafeBytes(of: &bytes) { raw in
            text.withUnsafeMutableBufferPointer { out in
                out.baseAddress!.withMemoryRebound(to: CChar.self, capacity: 64) {
                    inet_ntop(family, isIPv4 ? raw.baseAddress! + 12 : raw.baseAddress!, $0, 64)
                }
            }
        }
        guard written != nil else { return "?" }
        return String(decoding: text.prefix { $0 != 0 }, as: UTF8.self) + "/" + String(prefixLength)
    }

    /// The high and low masks of a 128-bit prefix.
    private static func mask(_ bits: Int) -> (UInt64, UInt64) {
        if bits <= 0 { return (0, 0) }
        if bits >= 128 { return (.max, .max) }
        if bits <= 64 { return (bits == 64 ? .max : ~(UInt64.max >> UInt64(bits)), 0) }
        return (.max, ~(UInt64.max >> UInt64(bits - 64)))
    }

    /// An address as 128 bits; IPv4 (and IPv4-mapped IPv6) in the low 32 with `isIPv4`.
    static func parseAddress(_ text: String) -> (high: UInt64, low: UInt64, isIPv4: Bool)? {
        guard !text.isEmpty, text.utf8.count < 64 else { return nil }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return (0, UInt64(UInt32(bigEndian: v4.s_addr)), true)
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        let (high, low) = withUnsafeBytes(of: &v6) { raw in
            (UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
             UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        }
        if high == 0, low >> 32 == 0xffff { return (0, low & 0xffff_ffff, true) }
        return (high, low, false)
    }
}
