import Glibc
import Testing

@testable import TandemMedia
@testable import TandemMediaCore

/// Two DTLS transports wired back to back in memory: datagrams are carried by hand, timers fired by hand.
struct DTLSPair {
    let client: DTLSTransport
    let server: DTLSTransport
    var clientEvent: DTLSTransport.Event?
    var serverEvent: DTLSTransport.Event?

    init(clientIdentity: DTLSIdentity, serverIdentity: DTLSIdentity, clientExpects: Fingerprint? = nil, serverExpects: Fingerprint? = nil) throws {
        client = try DTLSTransport(identity: clientIdentity, role: .client, remoteFingerprint: clientExpects ?? serverIdentity.fingerprint)
        server = try DTLSTransport(identity: serverIdentity, role: .server, remoteFingerprint: serverExpects ?? clientIdentity.fingerprint)
    }

    /// Runs the handshake to its end; `drop` loses the first flight of the given side once.
    mutating func run(dropFirstClientFlight: Bool = false) {
        clientEvent = client.start()
        var dropping = dropFirstClientFlight
        for _ in 0..<20 {
            var toServer = client.takeOutgoing()
            if dropping, !toServer.isEmpty {
                toServer = []
                dropping = false
                _ = client.handleTimeoutNow()
                toServer = client.takeOutgoing()
            }
            for d in toServer { serverEvent = server.receive(d) ?? serverEvent }
            for d in server.takeOutgoing() { clientEvent = client.receive(d) ?? clientEvent }
            if clientEvent != nil, serverEvent != nil { break }
        }
    }
}

extension DTLSTransport {
    /// Waits for the retransmission timer (400 ms at first) and fires it.
    func handleTimeoutNow() -> Event? {
        while let ms = timeoutMs, ms > 0 { usleep(UInt32(ms) * 1000 + 1000) }
        return handleTimeout()
    }
}

@Suite struct DTLSTests {
    static let a = try! DTLSIdentity.generate(commonName: "a")
    static let b = try! DTLSIdentity.generate(commonName: "b")

    @Test func handshakeExportsMatchingSRTPKeysAndMediaFlows() throws {
        var pair = try DTLSPair(clientIdentity: Self.a, serverIdentity: Self.b)
        pair.run()
        guard case let .connected(clientLocal, clientRemote)? = pair.clientEvent, case let .connected(serverLocal, serverRemote)? = pair.serverEvent
        else {
            Issue.record("handshake did not finish: \(String(describing: pair.clientEvent)) / \(String(describing: pair.serverEvent))")
            return
        }
        #expect(clientLocal.profile == .aeadAES128GCM)
        #expect(clientLocal == serverRemote)
        #expect(serverLocal == clientRemote)
        #expect(clientLocal != clientRemote)
        #expect(clientLocal.keyAndSalt.count == 28)

        let rtp = hex("80601234000000640000beef") + [UInt8](repeating: 7, count: 1000)
        let sent = try SRTPSession(clientLocal, direction: .outbound).protect(rtp)
        #expect(sent != rtp)
        #expect(try SRTPSession(serverRemote, direction: .inbound).unprotect(sent) == rtp)
        // The other direction uses the other key: the client's own key cannot read the server's packets.
        let back = try SRTPSession(serverLocal, direction: .outbound).protect(rtp)
        #expect(throws: MediaError.self) { try SRTPSession(clientLocal, direction: .inbound).unprotect(back) }
        #expect(try SRTPSession(clientRemote, direction: .inbound).unprotect(back) == rtp)
    }

    @Test func datagramsFitTheMTU() throws {
        let pair = try DTLSPair(clientIdentity: Self.a, serverIdentity: Self.b)
        pair.client.start().map { Issue.record("unexpected \($0)") }
        var sizes: [Int] = []
        for _ in 0..<6 {
            let c = pair.client.takeOutgoing()
            sizes += c.map(\.count)
            for d in c { _ = pair.server.receive(d) }
            let s = pair.server.takeOutgoing()
            sizes += s.map(\.count)
            for d in s { _ = pair.client.receive(d) }
        }
        #expect(!sizes.isEmpty)
        #expect(sizes.allSatisfy { $0 <= DTLSTransport.mtu })
    }

    @Test func wrongFingerprintFailsClosedOnBothRoles() throws {
        // The client expects some other certificate: it refuses the server's.
        var pair = try DTLSPair(clientIdentity: Self.a, serverIdentity: Self.b, clientExpects: Self.a.fingerprint)
        pair.run()
        #expect(pair.clientEvent == .failed(MediaError(.fingerprintMismatch, "the peer's certificate does not match the fingerprint in its SDP")))
        if case .connected? = pair.clientEvent { Issue.record("client accepted a wrong certificate") }

        var other = try DTLSPair(clientIdentity: Self.a, serverIdentity: Self.b, serverExpects: Self.b.fingerprint)
        other.run()
        guard case .failed(let error)? = other.serverEvent else {
            Issue.record("server accepted a wrong certificate: \(String(describing: other.serverEvent))")
            return
        }
        #expect(error.code == .fingerprintMismatch)
    }

    @Test func lostFlightIsRetransmitted() throws {
        var pair = try DTLSPair(clientIdentity: Self.a, serverIdentity: Self.b)
        #expect(pair.client.timeoutMs == nil)
        pair.run(dropFirstClientFlight: true)
        guard case .connected? = pair.clientEvent, case .connected? = pair.serverEvent else {
            Issue.record("no handshake after a lost flight")
            return
        }
    }

    @Test func clientStartsATimerAndTheServerWaits() throws {
        let pair = try DTLSPair(clientIdentity: Self.a, serverIdentity: Self.b)
        #expect(pair.server.start() == nil)
        #expect(pair.server.takeOutgoing().isEmpty)
        _ = pair.client.start()
        #expect(pair.client.takeOutgoing().count == 1)
        #expect(pair.client.timeoutMs != nil)
    }

    @Test func garbageIsAnErrorNotACrash() throws {
        let pair = try DTLSPair(clientIdentity: Self.a, serverIdentity: Self.b)
        var event: DTLSTransport.Event?
        for n in [1, 13, 25, 200, 1500] {
            event = pair.server.receive([UInt8](repeating: 0x16, count: n)) ?? event
        }
        if case .connected? = event { Issue.record("garbage completed a handshake") }
        #expect(pair.server.receive([]) == nil)
    }

    @Test func fingerprintParsing() {
        let fp = Self.a.fingerprint
        #expect(Fingerprint(sdpValue: fp.description) == fp)
        #expect(fp.description.hasPrefix("sha-256 "))
        #expect(Fingerprint(sdpValue: "SHA-256 " + fp.description.dropFirst(8)) == fp)
        #expect(Fingerprint(sdpValue: "md5 AB:CD") == nil)
        #expect(Fingerprint(sdpValue: "sha-256 ZZ:00") == nil)
        #expect(Fingerprint(sdpValue: "sha-256") == nil)
    }

    @Test func configuredCertificateLoadsAndBadPEMIsRefused() throws {
        let (cert, key) = try DTLSIdentity.generatePEM()
        let identity = try DTLSIdentity.load(certificatePEM: cert, keyPEM: key)
        #expect(identity.certificatePEM == cert)
        #expect(throws: MediaError.self) { try DTLSIdentity.load(certificatePEM: "nope", keyPEM: key) }
        let (_, otherKey) = try DTLSIdentity.generatePEM()
        #expect(throws: MediaError.self) { try DTLSIdentity.load(certificatePEM: cert, keyPEM: otherKey) }
    }
}

extension DTLSTests {
    @Test func closingAnEstablishedAssociationSendsCloseNotify() throws {
        var pair = try DTLSPair(clientIdentity: Self.a, serverIdentity: Self.b)
        pair.run()
        _ = pair.server.takeOutgoing()
        pair.client.close()
        let alerts = pair.client.takeOutgoing()
        #expect(alerts.count == 1 && alerts.first?.first == 21, "one alert record")
        #expect(alerts.compactMap { pair.server.receive($0) } == [.closed])
        pair.client.close()
        #expect(pair.client.takeOutgoing().isEmpty, "once")
        // Before the handshake there is nothing to close.
        let fresh = try DTLSPair(clientIdentity: Self.a, serverIdentity: Self.b)
        fresh.server.close()
        #expect(fresh.server.takeOutgoing().isEmpty)
    }

    /// A pair whose handshake finished.
    static func connectedPair() throws -> DTLSPair {
        var pair = try DTLSPair(clientIdentity: a, serverIdentity: b)
        pair.run()
        guard case .connected? = pair.serverEvent, case .connected? = pair.clientEvent else { throw DTLSPairError.handshake }
        return pair
    }

    enum DTLSPairError: Error { case handshake }

    /// After the handshake a peer may pack several records in one datagram: every one is read (one
    /// SSL_read per datagram left 229 bytes in the memory BIO here), so a close_notify behind
    /// application data is seen.
    @Test func packedRecordsAreAllRead() throws {
        let pair = try Self.connectedPair()
        for i in 0..<5 { #expect(pair.client.writeApplicationData([UInt8(i)])) }
        pair.client.close()
        let records = pair.client.takeOutgoing()
        #expect(records.count == 6)
        #expect(pair.server.receive(records.flatMap { $0 }) == .closed)
        #expect(pair.server.bufferedInput == 0)
    }

    /// A client that asks to renegotiate gets a no_renegotiation alert (content type 21), not a new
    /// handshake flight (22), and the association goes on as it was.
    @Test func renegotiationIsRefused() throws {
        let pair = try Self.connectedPair()
        #expect(pair.server.refusesRenegotiation, "by Tandem's own setting, not only the library's default")
        #expect(pair.client.renegotiate())
        let hello = pair.client.takeOutgoing()
        #expect(hello.first?.first == 22, "the client sent a ClientHello")
        for d in hello { #expect(pair.server.receive(d) == nil) }
        let answer = pair.server.takeOutgoing()
        #expect(!answer.isEmpty && answer.allSatisfy { $0.first == 21 }, "\(answer.map { $0.first ?? 0 })")
        // The server's side is as it was: no handshake under way holds up what it writes.
        #expect(pair.server.writeApplicationData([1, 2, 3]))
    }
}
