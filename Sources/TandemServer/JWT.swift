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

    public init(secret: String) {
        jwt = HS256JWT(secret: secret)
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

    /// Verifies signature, expiry and (when given) the session.
    public func verify(_ token: String, session: String?, nowSeconds: Int64) throws(TokenError) -> JoinClaims {
        let payload = try jwt.verify(token)
        guard let sub = payload["sub"]?.stringValue,
            let tokenSession = payload["session"]?.stringValue, let exp = payload["exp"]?.doubleValue
        else { throw TokenError(code: .malformed) }
        guard Int64(exp) > nowSeconds else { throw TokenError(code: .expired) }
        if let session, session != tokenSession { throw TokenError(code: .wrongSession) }
        return JoinClaims(identity: sub, session: tokenSession, name: payload["name"]?.stringValue, expiresAt: Int64(exp))
    }
}

