import Crypto

/// The TURN REST credential scheme that coturn and the WebRTC world share: the username is
/// `EXPIRY:IDENTITY` (EXPIRY in Unix seconds) and the password is the base64 HMAC-SHA1 of the username
/// under a secret the signaling server and the TURN server both know. Nothing is stored per user.
public enum TURNCredentials {
    /// Mints a username and password valid until `expiry` (Unix seconds).
    public static func mint(secret: String, identity: String, expiry: Int64) -> (username: String, password: String) {
        let username = "\(expiry):\(identity)"
        return (username, password(secret: Array(secret.utf8), username: username))
    }

    public static func password(secret: [UInt8], username: String) -> String {
        let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Array(username.utf8), using: SymmetricKey(data: secret))
        return base64(Array(mac))
    }

    /// The expiry and identity of a REST username; nil when it is not one.
    public static func parse(username: String) -> (expiry: Int64, identity: Substring)? {
        guard let colon = username.firstIndex(of: ":"), let expiry = Int64(username[..<colon]) else { return nil }
        return (expiry, username[username.index(after: colon)...])
    }

    /// The long-term credential key (RFC 8489 §9.2.2): MD5 or SHA-256 of `username:realm:password`.
    public static func longTermKey(username: String, realm: String, password: String, algorithm: PasswordAlgorithm) -> [UInt8] {
        let text = Array("\(username):\(realm):\(password)".utf8)
        switch algorithm {
        case .md5: return Array(Insecure.MD5.hash(data: text))
        case .sha256: return Array(SHA256.hash(data: text))
        }
    }

    static func base64(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let n = bytes.count - i
            let b0 = UInt32(bytes[i])
            let b1 = n > 1 ? UInt32(bytes[i + 1]) : 0
            let b2 = n > 2 ? UInt32(bytes[i + 2]) : 0
            let v = b0 << 16 | b1 << 8 | b2
            out.append(alphabet[Int(v >> 18 & 63)])
            out.append(alphabet[Int(v >> 12 & 63)])
            out.append(n > 1 ? alphabet[Int(v >> 6 & 63)] : UInt8(ascii: "="))
            out.append(n > 2 ? alphabet[Int(v & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// PASSWORD-ALGORITHM values (RFC 8489 §18.5).
public enum PasswordAlgorithm: UInt16, Sendable {
    case md5 = 0x0001
    case sha256 = 0x0002
}

/// Nonces that need no table: an expiry and a MAC over it and the client's address, under a key the
/// process makes at start. They carry the RFC 8489 cookie announcing PASSWORD-ALGORITHMS support.
public struct NonceMaker: Sendable {
    /// "obMatJos2" and the security feature set with "Password algorithms" (bit 0) on.
    static let prefix = "obMatJos2gAAA"
    let key: [UInt8]
    let lifetime: Double

    public init(key: [UInt8], lifetime: Double) {
        self.key = key
        self.lifetime = lifetime
    }

    public func make(for client: IPAddress, now: Double) -> String {
        let expiry = UInt32(clamping: Int64(now + lifetime))
        return Self.prefix + hex(expiry) + mac(expiry, client)
    }

    public enum Check: Equatable { case valid, stale, invalid }

    public func check(_ nonce: String, for client: IPAddress, now: Double) -> Check {
        let utf8 = Array(nonce.utf8)
        guard utf8.count == Self.prefix.utf8.count + 8 + 16, nonce.hasPrefix(Self.prefix) else { return .invalid }
        let expiryText = String(decoding: utf8[13..<21], as: UTF8.self)
        guard let expiry = UInt32(expiryText, radix: 16) else { return .invalid }
        guard constantTimeEqual(Array(mac(expiry, client).utf8), Array(utf8[21...])) else { return .invalid }
        return Double(expiry) < now ? .stale : .valid
    }

    private func mac(_ expiry: UInt32, _ client: IPAddress) -> String {
        var input = expiry.bigEndianBytes
        input.append(contentsOf: client.bytes)
        let code = HMAC<SHA256>.authenticationCode(for: input, using: SymmetricKey(data: key))
        return code.prefix(8).map { hex($0) }.joined()
    }

    private func hex<T: FixedWidthInteger>(_ v: T) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: T.bitWidth / 4 - s.count) + s
    }
}
