@preconcurrency import Crypto
import Foundation
import TandemProtocol

/// Why a token was refused.
public struct TokenError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable { case malformed, badSignature, expired, notYetValid, wrongSession, unsupportedAlgorithm }
    public let code: Code
    public init(code: Code) { self.code = code }
    public var description: String {
        switch code {
        case .malformed: "the token is not a well-formed JWT"
        case .badSignature: "the token's signature does not verify"
        case .expired: "the token has expired"
        case .notYetValid: "the token is not valid yet (nbf or iat in the future)"
        case .wrongSession: "the token is for another session"
        case .unsupportedAlgorithm: "the token is not HS256"
        }
    }
}

/// HS256 JSON Web Tokens (RFC 7519) with one secret. Only HS256 is accepted: the header's `alg` is
/// checked, so a token cannot downgrade itself to `none`. Claims beyond the signature are the caller's.
public struct HS256JWT: Sendable {
    private let key: SymmetricKey

    public init(secret: String) {
        key = SymmetricKey(data: Data(secret.utf8))
    }

    /// Signs a JSON object's bytes as the token's payload.
    public func sign(payload: [UInt8]) -> String {
        let header = Base64URL.encode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let signingInput = header + "." + Base64URL.encode(payload)
        let mac = HMAC<SHA256>.authenticationCode(for: Data(signingInput.utf8), using: key)
        return signingInput + "." + Base64URL.encode(Array(mac))
    }

    /// The payload of a well-formed token whose signature verifies, as a JSON object.
    public func verify(_ token: String) throws(TokenError) -> JSON {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerBytes = Base64URL.decode(parts[0]), let payloadBytes = Base64URL.decode(parts[1]),
            let signature = Base64URL.decode(parts[2])
        else { throw TokenError(code: .malformed) }
        guard let header = try? JSONParser.parse(headerBytes), let alg = header["alg"]?.stringValue else {
            throw TokenError(code: .malformed)
        }
        guard alg == "HS256" else { throw TokenError(code: .unsupportedAlgorithm) }
        let signingInput = Data(parts[0].utf8) + Data(".".utf8) + Data(parts[1].utf8)
        guard HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signingInput, using: key) else {
            throw TokenError(code: .badSignature)
        }
        guard let payload = try? JSONParser.parse(payloadBytes), case .object = payload else { throw TokenError(code: .malformed) }
        return payload
    }
}

/// Unpadded base64url (RFC 4648 §5).
public enum Base64URL {
    public static func encode(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    public static func decode<S: StringProtocol>(_ text: S) -> [UInt8]? {
        guard text.utf8.count <= 8192 else { return nil }
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        guard !s.contains("=") else { return nil }
        while s.utf8.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s).map(Array.init)
    }
}
