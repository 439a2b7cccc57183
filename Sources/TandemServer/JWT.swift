@preconcurrency import Crypto
import Foundation
import TandemProtocol

/// The claims of a join token.
public struct JoinClaims: Sendable, Equatable {
    /// The participant identity (`sub`).
    public var identity: String
    public var session: String
    public var name: String?
    /// Expiry, seconds since 1970.
    public var expiresAt: Int64

    public init(identity: String, session: String, name: String?, expiresAt: Int64) {
        self.identity = identity
        self.session = session
        self.name = name
        self.expiresAt = expiresAt
    }
}

/// Why a token was refused.
public struct TokenError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable { case malformed, badSignature, expired, wrongSession, unsupportedAlgorithm }
    public let code: Code
    public var description: String {
        switch code {
        case .malformed: "the token is not a well-formed JWT"
        case .badSignature: "the token's signature does not verify"
        case .expired: "the token has expired"
        case .wrongSession: "the token is for another session"
        case .unsupportedAlgorithm: "the token is not HS256"
        }
    }
}

/// HS256 JSON Web Tokens (RFC 7519) for joins. Only HS256 is accepted: the header's `alg` is checked, so
/// a token cannot downgrade itself to `none`.
public struct JoinTokens: Sendable {
    private let key: SymmetricKey

    public init(secret: String) {
        key = SymmetricKey(data: Data(secret.utf8))
    }

    public func sign(_ claims: JoinClaims) -> String {
        var payload = JSONWriter()
        payload.beginObject()
        payload.member("sub", claims.identity)
        payload.member("session", claims.session)
        if let name = claims.name { payload.member("name", name) }
        payload.member("exp", Int(claims.expiresAt))
        payload.endObject()
        let header = Base64URL.encode(Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let signingInput = header + "." + Base64URL.encode(payload.bytes)
        let mac = HMAC<SHA256>.authenticationCode(for: Data(signingInput.utf8), using: key)
        return signingInput + "." + Base64URL.encode(Array(mac))
    }

    /// Verifies signature, expiry and (when given) the session.
    public func verify(_ token: String, session: String?, nowSeconds: Int64) throws(TokenError) -> JoinClaims {
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
        guard let payload = try? JSONParser.parse(payloadBytes), let sub = payload["sub"]?.stringValue,
            let tokenSession = payload["session"]?.stringValue, let exp = payload["exp"]?.doubleValue
        else { throw TokenError(code: .malformed) }
        guard Int64(exp) > nowSeconds else { throw TokenError(code: .expired) }
        if let session, session != tokenSession { throw TokenError(code: .wrongSession) }
        return JoinClaims(identity: sub, session: tokenSession, name: payload["name"]?.stringValue, expiresAt: Int64(exp))
    }
}

/// Unpadded base64url (RFC 4648 §5).
enum Base64URL {
    static func encode(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decode<S: StringProtocol>(_ text: S) -> [UInt8]? {
        guard text.utf8.count <= 8192 else { return nil }
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        guard !s.contains("=") else { return nil }
        while s.utf8.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s).map(Array.init)
    }
}
