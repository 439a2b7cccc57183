import TandemJWT
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

/// Join tokens: HS256 JSON Web Tokens whose claims name the identity, the session and the expiry.
public struct JoinTokens: Sendable {
    private let jwt: HS256JWT
    /// Clock skew allowed between the token's issuer and this server, on `exp`, `nbf` and `iat`.
    public let leewaySeconds: Int64

    public init(secret: String, leewaySeconds: Int64 = 60) {
        jwt = HS256JWT(secret: secret)
        self.leewaySeconds = leewaySeconds
    }

    public func sign(_ claims: JoinClaims) -> String {
        var payload = JSONWriter()
        payload.beginObject()
        payload.member("sub", claims.identity)
        payload.member("session", claims.session)
        if let name = claims.name { payload.member("name", name) }
        payload.member("exp", Int(claims.expiresAt))
        payload.endObject()
        return jwt.sign(payload: payload.bytes)
    }

    /// Verifies signature, expiry, not-before and issued-at (each with the leeway) and, when given, the session.
    public func verify(_ token: String, session: String?, nowSeconds: Int64) throws(TokenError) -> JoinClaims {
        let payload = try jwt.verify(token)
        guard let sub = payload["sub"]?.stringValue, let tokenSession = payload["session"]?.stringValue,
            let exp = try Self.numericDate(payload["exp"])
        else { throw TokenError(code: .malformed) }
        guard exp > nowSeconds - leewaySeconds else { throw TokenError(code: .expired) }
        if let nbf = try Self.numericDate(payload["nbf"]), nbf > nowSeconds + leewaySeconds { throw TokenError(code: .notYetValid) }
        if let iat = try Self.numericDate(payload["iat"]), iat > nowSeconds + leewaySeconds { throw TokenError(code: .notYetValid) }
        if let session, session != tokenSession { throw TokenError(code: .wrongSession) }
        return JoinClaims(identity: sub, session: tokenSession, name: payload["name"]?.stringValue, expiresAt: exp)
    }

    /// A NumericDate claim (RFC 7519 §2) in whole seconds, nil when absent. Any finite number is taken
    /// and clamped to ±10^15 s (30 million years), so that no signed value can overflow a conversion.
    static func numericDate(_ value: JSON?) throws(TokenError) -> Int64? {
        guard let value else { return nil }
        guard let seconds = value.doubleValue, seconds.isFinite else { throw TokenError(code: .malformed) }
        return Int64(min(max(seconds, -1e15), 1e15).rounded(.down))
    }
}
