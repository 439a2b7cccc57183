import Foundation
import TandemSTUN
import TandemTURN
import TandemTURNService

/// Tandem's own TURN service and the credentials it hands out, for itself and for any external TURN
/// server (coturn) that shares the secret.
public struct TURNSettings: Sendable {
    public var service = TURNServiceConfiguration()
    /// The host name or address clients reach TURN at.
    public var publicHost: String
    public var credentialTTL: Duration = .seconds(86_400)
    /// `turn:`/`turns:`/`stun:` URLs of external servers that share `secret`.
    public var externalURLs: [String] = []

    /// `secret` is the REST scheme's shared secret; it becomes the service's first (minting) secret.
    public init(secret: String, publicHost: String) {
        service.policy.secrets = [secret]
        self.publicHost = publicHost
    }

    /// The secret credentials are minted with: the first of the service's, which verifies them too.
    public var secret: String { service.policy.secrets[0] }

    /// True when this process runs the TURN service itself.
    public var runsService: Bool { !service.listen.isEmpty || !service.tlsListen.isEmpty }
}
