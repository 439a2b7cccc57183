#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An IPv4 or IPv6 address as two 64-bit words, so that it hashes and compares in a few instructions
/// on the packet path. IPv4 lives in the low 32 bits of `low` with `high` zero and `isV6` false.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64
    public var isV6: Bool

    /// `0.0.0.0` or `::`: a wildcard to bind, never an address to hand out.
    public var isUnspecified: Bool { self == IPAddress("0.0.0.0") || self == IPAddress("::") }

    /// `127.0.0.0/8`, `::1`, or an IPv4-mapped loopback address.
    public var isLoopback: Bool {
        let ip = unmappedV4 ?? self
        return ip.isV6 ? ip.high == 0 && ip.low == 1 : ip.low >> 24 == 127
    }

    public init(v4 value: UInt32) {
        high = 0
        low = UInt64(value)
        isV6 = false
    }

    public init(v6 high: UInt64, _ low: UInt64) {
        self.high = high
        self.low = low
        isV6 = true
    }

    /// 4 or 16 network-order bytes.
    public init?<C: Collection<UInt8>>(bytes: C) {
        switch bytes.count {
        case 4:
            self.init(v4: UInt32(bigEndianBytes: bytes))
        case 16:
            self.init(v6: UInt64(bigEndianBytes: bytes.prefix(8)), UInt64(bigEndianBytes: bytes.dropFirst(8)))
        default:
            return nil
        }
    }

    /// Parses dotted IPv4 or textual IPv6 (no zone, no brackets).
    public init?(_ text: String) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(bytes: withUnsafeBytes(of: v4) { Array($0) })
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            self.init(bytes: withUnsafeBytes(of: v6) { Array($0) })
        } else {
            return nil
        }
    }

    /// Network-order bytes: 4 for IPv4, 16 for IPv6.
    public var bytes: [UInt8] {
        isV6 ? high.bigEndianBytes + low.bigEndianBytes : UInt32(truncatingIfNeeded: low).bigEndianBytes
    }

    /// The IPv4 address inside an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), if this is one.
    public var unmappedV4: IPAddress? {
        guard isV6, high == 0, low >> 32 == 0xFFFF else { return nil }
        return IPAddress(v4: UInt32(truncatingIfNeeded: low))
    }

    /// The IPv4 addresses an IPv6 address carries: IPv4-compatible (`::/96`), NAT64 (`64:ff9b::/96`),
    /// 6to4 (`2002::/16`) and Teredo (`2001::/32`: its server and its client, which Teredo stores
    /// inverted). IPv4-mapped addresses are `unmappedV4`.
    public var embeddedV4: [IPAddress] {
        guard isV6 else { return [] }
        let low32 = UInt32(truncatingIfNeeded: low)
        if high == 0, low >> 32 == 0, low32 > 1 { return [IPAddress(v4: low32)] }
        if high == 0x0064_FF9B_0000_0000, low >> 32 == 0 { return [IPAddress(v4: low32)] }
        if high >> 48 == 0x2002 { return [IPAddress(v4: UInt32(truncatingIfNeeded: high >> 16))] }
        if high >> 32 == 0x2001_0000 { return [IPAddress(v4: UInt32(truncatingIfNeeded: high)), IPAddress(v4: ~low32)] }
        return []
    }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let raw = bytes
        let ok = raw.withUnsafeBytes { src in
            inet_ntop(isV6 ? AF_INET6 : AF_INET, src.baseAddress, &buffer, socklen_t(buffer.count)) != nil
        }
        return ok ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }
}

/// An IP address and a port: one end of a 5-tuple, a relayed address or a peer.
public struct TransportAddress: Hashable, Sendable, CustomStringConvertible {
    public var ip: IPAddress
    public var port: UInt16

    public init(ip: IPAddress, port: UInt16) {
        self.ip = ip
        self.port = port
    }

    /// Parses `1.2.3.4:5`, `[::1]:5`.
    public init?(_ text: String) {
        guard let (host, portText) = splitHostPort(text), let ip = IPAddress(String(host)), let port = UInt16(portText) else { return nil }
        self.init(ip: ip, port: port)
    }

    public var description: String { ip.isV6 ? "[\(ip)]:\(port)" : "\(ip):\(port)" }
}

/// Splits `HOST:PORT` or `[IPv6]:PORT` into the host (without brackets) and the port text; nil when
/// the text has neither shape. Neither part is checked.
public func splitHostPort(_ text: String) -> (host: Substring, port: Substring)? {
    if text.hasPrefix("[") {
        guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
        return (text[text.index(after: text.startIndex)..<close], text[text.index(close, offsetBy: 2)...])
    }
    guard let colon = text.lastIndex(of: ":") else { return nil }
    return (text[..<colon], text[text.index(after: colon)...])
}

/// An IPv4 or IPv6 prefix such as `10.0.0.0/8` or `fe80::/10`.
public struct IPPrefix: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var length: Int

    public init(_ address: IPAddress, _ length: Int) {
        self.address = address
        self.length = length
    }

    /// Parses `ADDRESS/LENGTH`, or a bare address as a host prefix.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1)
        guard let first = parts.first, let ip = IPAddress(String(first)) else { return nil }
        let max = ip.isV6 ? 128 : 32
        if parts.count == 2 {
            guard let n = Int(parts[1]), (0...max).contains(n) else { return nil }
            self.init(ip, n)
        } else {
            self.init(ip, max)
        }
    }

    public func contains(_ ip: IPAddress) -> Bool {
        guard ip.isV6 == address.isV6 else { return false }
        if !ip.isV6 {
            if length == 0 { return true }
            let mask = UInt64(UInt32.max << (32 - length) & UInt32.max)
            return ip.low & mask == address.low & mask
        }
        func mask(_ bits: Int) -> UInt64 { bits <= 0 ? 0 : bits >= 64 ? .max : .max << (64 - bits) }
        let highMask = mask(length)
        let lowMask = mask(length - 64)
        return ip.high & highMask == address.high & highMask && ip.low & lowMask == address.low & lowMask
    }

    public var description: String { "\(address)/\(length)" }
}
