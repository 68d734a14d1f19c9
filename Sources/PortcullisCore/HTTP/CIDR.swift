#if canImport(Glibc)
import Glibc
#endif

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`); a bare address is a network of
/// one. Used by rate-limit exemptions and transform conditions, matched against the client
/// address as nginx reports it (`$remote_addr`).
///
/// Addresses are compared as 128 bits with IPv4 mapped into `::ffff:0:0/96`, so an IPv4 network
/// also matches a client nginx reports as `::ffff:a.b.c.d`. Bits past the prefix are ignored
/// (`10.0.0.1/8` is `10.0.0.0/8`). Parsing a client address and matching allocate nothing.
public struct CIDR: Sendable, Hashable {
    /// The network's 128 bits, masked to the prefix.
    let high: UInt64
    let low: UInt64
    /// Prefix length over the 128 bits (an IPv4 prefix plus 96).
    let prefixBits: Int

    /// Parses `address` or `address/prefix`; nil when it is not an address or CIDR network.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = CIDR.address(String(parts[0])) else { return nil }
        let maxBits = address.isIPv4 ? 32 : 128
        var bits = maxBits
        if parts.count == 2 {
            guard !parts[1].isEmpty, parts[1].count <= 3, parts[1].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  let n = Int(parts[1]), n <= maxBits else { return nil }
            bits = n
        }
        prefixBits = address.isIPv4 ? bits + 96 : bits
        let (mh, ml) = CIDR.mask(prefixBits)
        high = address.high & mh
        low = address.low & ml
    }

    /// Whether `address` (as nginx writes `$remote_addr`) lies in this network; false for text
    /// that is not an IP address (a unix socket).
    public func contains(_ address: String) -> Bool {
        guard let a = CIDR.address(address) else { return false }
        return contains(a.high, a.low)
    }

    /// Whether any of `networks` contains `address` (parsed once).
    public static func any(_ networks: [CIDR], contains address: String?) -> Bool {
        guard let address, let a = CIDR.address(address) else { return false }
        return networks.contains { $0.contains(a.high, a.low) }
    }

    func contains(_ high: UInt64, _ low: UInt64) -> Bool {
        let (mh, ml) = CIDR.mask(prefixBits)
        return high & mh == self.high && low & ml == self.low
    }

    /// The high and low masks of a 128-bit prefix.
    private static func mask(_ bits: Int) -> (UInt64, UInt64) {
        if bits <= 0 { return (0, 0) }
        if bits >= 128 { return (.max, .max) }
        if bits <= 64 { return (bits == 64 ? .max : ~(UInt64.max >> UInt64(bits)), 0) }
        return (.max, ~(UInt64.max >> UInt64(bits - 64)))
    }

    /// An address as 128 bits, IPv4 mapped into `::ffff:0:0/96`.
    static func address(_ text: String) -> (high: UInt64, low: UInt64, isIPv4: Bool)? {
        guard !text.isEmpty, text.utf8.count < 64 else { return nil }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return (0, 0xffff_0000_0000 | UInt64(UInt32(bigEndian: v4.s_addr)), true)
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        return withUnsafeBytes(of: &v6) { raw in
            (UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
             UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)), false)
        }
    }
}
