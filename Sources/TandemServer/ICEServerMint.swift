import Foundation
import Synchronization
import TandemProtocol
import TandemSTUN
import TandemTURN
import TandemTURNService

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
