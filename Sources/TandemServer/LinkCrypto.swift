import Crypto
import Foundation

/// The trust of a cluster link, from the cluster secret alone: the dialing node proves it holds the
/// secret (an HMAC over its name, a fresh nonce and the time), the accepting node proves it back (over
/// both nonces), and every frame after that is sealed with ChaCha20-Poly1305 under keys derived from
/// the secret and both nonces, one per direction, with a counter as the nonce. So a link is
/// authenticated and encrypted without any certificate authority, also over a TLS connection whose
/// certificate nobody checks (each node's development CA is its own), and a frame cannot be replayed,
/// reordered or moved to the other direction.
struct LinkSecret: Sendable {
    private let secret: [UInt8]

    init(_ secret: String) { self.secret = Array(secret.utf8) }

    private var key: SymmetricKey { SymmetricKey(data: secret) }

    private func mac(_ parts: [[UInt8]]) -> [UInt8] {
        var hmac = HMAC<SHA256>(key: key)
        for part in parts {
            let n = UInt32(part.count)
            hmac.update(data: [UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)])
            hmac.update(data: part)
        }
        return Array(hmac.finalize())
    }

    /// The dialing node's proof, sent with its name, nonce and time.
    func dialProof(node: String, nonce: [UInt8], unixTime: Int64) -> [UInt8] {
        mac([Array("tandem-link-dial".utf8), Array(node.utf8), nonce, Array(String(unixTime).utf8)])
    }

    /// The accepting node's proof, its first frame.
    func acceptProof(node: String, dialNonce: [UInt8], acceptNonce: [UInt8]) -> [UInt8] {
        mac([Array("tandem-link-accept".utf8), Array(node.utf8), dialNonce, acceptNonce])
    }

    /// The sealing keys: the dialer's frames', and the accepter's.
    func keys(dialNonce: [UInt8], acceptNonce: [UInt8]) -> (dialer: [UInt8], accepter: [UInt8]) {
        let derived = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: key, salt: dialNonce + acceptNonce, info: Array("tandem-link-keys".utf8), outputByteCount: 64)
        let bytes = derived.withUnsafeBytes { Array($0) }
        return (Array(bytes[0..<32]), Array(bytes[32..<64]))
    }

    static func nonce() -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        return (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    /// Nonces and proofs travel in the dial's query as lower-case hex.
    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    static func unhex(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        for i in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[i..<(i + 2)], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
        }
        return bytes
    }

    static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return zip(a, b).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

/// One direction of a link: seals or opens its frames in order.
struct LinkCipher: Sendable {
    struct Refused: Error {}

    private let keyBytes: [UInt8]
    private var counter: UInt64 = 0

    init(key: [UInt8]) { keyBytes = key }

    private var key: SymmetricKey { SymmetricKey(data: keyBytes) }

    private mutating func nextNonce() -> ChaChaPoly.Nonce {
        var bytes = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 { bytes[4 + i] = UInt8(truncatingIfNeeded: counter >> UInt64(56 - 8 * i)) }
        counter += 1
        return try! ChaChaPoly.Nonce(data: bytes)  // 12 bytes, always valid
    }

    mutating func seal(_ plaintext: [UInt8]) -> [UInt8] {
        let box = try! ChaChaPoly.seal(plaintext, using: key, nonce: nextNonce())  // fails only for a wrong-size key or nonce
        return Array(box.ciphertext) + Array(box.tag)
    }

    /// The plaintext of the next frame; a frame out of order, replayed or altered is refused.
    mutating func open(_ sealed: [UInt8]) throws(Refused) -> [UInt8] {
        guard sealed.count >= 16 else { throw Refused() }
        let nonce = nextNonce()
        do {
            let box = try ChaChaPoly.SealedBox(nonce: nonce, ciphertext: sealed.dropLast(16), tag: sealed.suffix(16))
            return Array(try ChaChaPoly.open(box, using: key))
        } catch {
            throw Refused()
        }
    }
}
