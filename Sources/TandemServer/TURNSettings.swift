import Foundation
import Synchronization
import TandemProtocol
import TandemSTUN
import TandemTURN

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

/// Mints the ICE servers of each participant's provider object: the configured static ones, then
/// STUN and TURN with REST credentials of their own.
final class ICEServerMint: Sendable {
    let settings: TURNSettings?
    let staticServers: [ICEServer]
    private let ownURLs = Mutex<(stun: [String], turn: [String])>(([], []))

    init(settings: TURNSettings?, staticServers: [ICEServer]) {
        self.settings = settings
        self.staticServers = staticServers
    }

    /// Called once the TURN service has bound its ports.
    func listening(udpAndTCP: [TransportAddress], tls: [TransportAddress]) {
        guard let settings else { return }
        let host = settings.publicHost.contains(":") ? "[\(settings.publicHost)]" : settings.publicHost
        var stun: [String] = []
        var turn: [String] = []
        for address in udpAndTCP {
            stun.append("stun:\(host):\(address.port)")
            turn.append("turn:\(host):\(address.port)?transport=udp")
            turn.append("turn:\(host):\(address.port)?transport=tcp")
        }
        for address in tls { turn.append("turns:\(host):\(address.port)?transport=tcp") }
        ownURLs.withLock { $0 = (stun, turn) }
    }

    func servers(for identity: String, nowUnix: Int64 = Int64(Date().timeIntervalSince1970)) -> [ICEServer] {
        guard let settings else { return staticServers }
        let own = ownURLs.withLock { $0 }
        var servers = staticServers
        if !own.stun.isEmpty { servers.append(ICEServer(urls: own.stun)) }
        let turnURLs = own.turn + settings.externalURLs
        if !turnURLs.isEmpty {
            let expiry = nowUnix + Int64(settings.credentialTTL.components.seconds)
            let (username, password) = TURNCredentials.mint(secret: settings.secret, identity: identity, expiry: expiry)
            servers.append(ICEServer(urls: turnURLs, username: username, credential: password))
        }
        return servers
    }
}
