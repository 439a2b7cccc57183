import NIOCore
import TandemSTUN
import TandemTURN

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension TransportAddress {
    /// nil for Unix domain sockets.
    init?(_ address: SocketAddress?) {
        switch address {
        case .v4(let a)?:
            self.init(ip: IPAddress(v4: UInt32(bigEndian: a.address.sin_addr.s_addr)), port: UInt16(bigEndian: a.address.sin_port))
        case .v6(let a)?:
            var raw = a.address.sin6_addr
            let ip = withUnsafeBytes(of: &raw) { IPAddress(bytes: $0)! }
            self.init(ip: ip, port: UInt16(bigEndian: a.address.sin6_port))
        default:
            return nil
        }
    }

    var socketAddress: SocketAddress {
        if !ip.isV6 {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr.s_addr = UInt32(truncatingIfNeeded: ip.low).bigEndian
            return SocketAddress(sin, host: "")
        }
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        let bytes = ip.bytes
        withUnsafeMutableBytes(of: &sin6.sin6_addr) { dst in
            for i in 0..<16 { dst[i] = bytes[i] }
        }
        return SocketAddress(sin6, host: "")
    }
}
