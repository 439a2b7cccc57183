import Foundation
import HummingbirdWSClient
import HummingbirdWebSocket
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import TandemProtocol
import TandemStore
import TandemSTUN

/// One end of a cluster link over a WebSocket: messages that any task queues are sealed and written in
/// order by the link's writer. The queue is bounded: a peer that stops reading loses the link (and its
/// bridged sockets are told to resume) rather than this node's memory.
final class ClusterLink: LinkSender {
    static let maxQueued = 65_536
    static let maxFrameBytes = 1 << 22

    let peer: String
    private let outgoing: AsyncStream<LinkMessage>.Continuation
    private let queue: AsyncStream<LinkMessage>

    init(peer: String) {
        self.peer = peer
        (queue, outgoing) = AsyncStream<LinkMessage>.makeStream(bufferingPolicy: .bufferingOldest(Self.maxQueued))
    }

    func send(_ message: LinkMessage) -> Bool {
        switch outgoing.yield(message) {
        case .enqueued: return true
        case .dropped:
            shut()
            return false
        case .terminated: return false
        @unknown default: return false
        }
    }

    /// Writes what is queued, sealed, until the link is shut.
    func write(to outbound: WebSocketOutboundWriter, cipher: LinkCipher) async throws {
        var cipher = cipher
        for await message in queue {
            try await outbound.write(.binary(ByteBuffer(bytes: cipher.seal(message.encoded()))))
        }
    }

    func shut() { outgoing.finish() }

    /// Hands each message as it arrives, opened and decoded, to `handle`, until the link ends; throws
    /// at the first frame refused.
    static func receive(
        _ iterator: inout WebSocketInboundMessageStream.AsyncIterator, cipher: LinkCipher, _ handle: (LinkMessage) -> Void
    ) async throws {
        var cipher = cipher
        while let frame = try await iterator.next() {
            guard case .binary(let buffer) = frame else { throw LinkCipher.Refused() }
            handle(try LinkMessage.decode(try cipher.open(Array(buffer.readableBytesView))))
        }
    }
}

/// The home's end of a link that another node dialled: it joins that node's participants here, as
/// bridged sockets, and passes their traffic to their sessions.
struct ClusterAcceptor {
    let hub: SignalingHub
    let secret: LinkSecret
    let peer: String
    let dialNonce: [UInt8]

    private struct Bridged {
        let socket: BridgedSocket
        var joined: (ParticipantID, any SessionEntry)?
        var closedEarly = false
    }

    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async {
        let acceptNonce = LinkSecret.nonce()
        let keys = secret.keys(dialNonce: dialNonce, acceptNonce: acceptNonce)
        do {
            try await outbound.write(.binary(ByteBuffer(bytes: acceptNonce + secret.acceptProof(node: hub.config.node, dialNonce: dialNonce, acceptNonce: acceptNonce))))
        } catch {
            return
        }
        let link = ClusterLink(peer: peer)
        let table = NIOLockedValueBox<[UInt64: Bridged]>([:])
        hub.logger.info("cluster link from node \(peer) open")
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await link.write(to: outbound, cipher: LinkCipher(key: keys.accepter)) }
            do {
                var messages = inbound.messages(maxSize: ClusterLink.maxFrameBytes).makeAsyncIterator()
                try await ClusterLink.receive(&messages, cipher: LinkCipher(key: keys.dialer)) { message in
                    handle(message, link: link, table: table)
                }
            } catch {
                hub.logger.warning("cluster link from node \(peer) refused a frame", metadata: ["error": "\(error)"])
            }
            link.shut()
            group.cancelAll()
        }
        // The link is gone: its participants' sockets are, as far as their sessions can tell.
        for bridged in table.withLockedValue({ Array($0.values) }) {
            bridged.socket.finish()
            if let (id, entry) = bridged.joined { entry.socketClosed(id, socket: bridged.socket.id) }
        }
        hub.logger.info("cluster link from node \(peer) closed")
    }

    private func handle(_ message: LinkMessage, link: ClusterLink, table: NIOLockedValueBox<[UInt64: Bridged]>) {
        let entry = table.withLockedValue { $0[message.socket] }
        switch message {
        case let .join(socket, identity, name, raw):
            guard entry == nil, case .join(var request)? = try? ClientMessage.decode(raw) else {
                _ = link.send(.refused(socket: socket, code: .badMessage, message: "not a join", retry: false))
                return
            }
            if request.name == nil { request.name = name }
            let bridged = BridgedSocket(id: hub.newConnectionID(), entrySocket: socket, link: link)
            table.withLockedValue { $0[socket] = Bridged(socket: bridged) }
            let context = JoinContext(request: request, identity: identity, connection: bridged, receivedAt: .now, raw: raw)
            // A join may wait (for the SFU service); the link's other traffic goes on meanwhile.
            Task {
                let outcome = await hub.join(context, bridging: false)
                guard case .joined(let id, let session) = outcome else {
                    table.withLockedValue { $0[socket] = nil }
                    if case .rejected(let error) = outcome {
                        _ = link.send(.refused(socket: socket, code: error.code, message: error.message, retry: false))
                    } else {
                        _ = link.send(.refused(socket: socket, code: .internal, message: "the session closed meanwhile", retry: true))
                    }
                    return
                }
                // A socket that closed while its join waited is closed in its session at once.
                let closedEarly = table.withLockedValue { t -> Bool in
                    guard t[socket]?.closedEarly == false else {
                        t[socket] = nil
                        return true
                    }
                    t[socket]?.joined = (id, session)
                    return false
                }
                _ = link.send(.joined(socket: socket, participant: id))
                if closedEarly { session.socketClosed(id, socket: bridged.id) }
            }
        case .message(_, let raw):
            guard let (id, session) = entry?.joined, let bridged = entry?.socket, let decoded = try? ClientMessage.decode(raw) else { return }
            if !session.message(id, socket: bridged.id, decoded, raw: raw) {
                bridged.close(code: CloseCode.normal, reason: "the session has ended")
            }
        case .closed(let socket):
            entry?.socket.finish()
            let joined = table.withLockedValue { t -> (ParticipantID, any SessionEntry)? in
                guard let found = t[socket] else { return nil }
                guard let joined = found.joined else {
                    t[socket]?.closedEarly = true
                    return nil
                }
                t[socket] = nil
                return joined
            }
            if let (id, session) = joined, let bridged = entry?.socket { session.socketClosed(id, socket: bridged.id) }
        case let .reject(_, code, text):
            guard let (id, session) = entry?.joined, let bridged = entry?.socket else { return }
            session.reject(id, socket: bridged.id, ProtocolError(code, text))
        case let .close(_, code, reason):
            guard let bridged = entry?.socket else { return }
            if let (id, session) = entry?.joined, session.close(id, socket: bridged.id, code: code, reason: reason) { return }
            bridged.close(code: code, reason: reason)
        case let .switchProvider(request, session, provider):
            Task {
                let result: Result<ProviderState, ProtocolError>
                if let id = SessionID(session), let name = ProviderName(rawValue: provider) {
                    result = await hub.forceSwitch(id, to: name, forwarding: false)
                } else {
                    result = .failure(ProtocolError(.badMessage, "no such session or provider"))
                }
                _ = link.send(.switched(socket: request, result))
            }
        case let .viewSession(request, session):
            Task {
                var json: [UInt8] = []
                if let id = SessionID(session), let view = try? await AdminAPI(hub: hub).sessionView(id, forwarding: false),
                    let encoded = try? JSONEncoder().encode(view)
                {
                    json = Array(encoded)
                }
                _ = link.send(.sessionView(socket: request, json: json))
            }
        case .joined, .refused, .frame, .closeSocket, .switched, .sessionView:
            break  // the home's own messages: a dialer never sends them
        }
    }
}

/// The entry's end of a link it dialled to a session's home: joins go there and their answers come
/// back; the home's frames for this node's sockets are written to them.
final class DialedLink: LinkSender {
    let node: String
    private let link: ClusterLink
    private let pending = NIOLockedValueBox<[UInt64: CheckedContinuation<LinkMessage?, Never>]>([:])
    /// Operators' requests (switches, views) waiting for the home's answer, by request number.
    private let switches = NIOLockedValueBox<(next: UInt64, waiting: [UInt64: CheckedContinuation<LinkMessage?, Never>])>((0, [:]))
    private let sockets = NIOLockedValueBox<[UInt64: any ParticipantSocket]>([:])

    init(node: String) {
        self.node = node
        link = ClusterLink(peer: node)
    }

    func send(_ message: LinkMessage) -> Bool { link.send(message) }

    func forget(_ socket: UInt64) { _ = sockets.withLockedValue { $0.removeValue(forKey: socket) } }

    /// Dials `address` and runs the link until it ends; `ready` hears whether the home proved itself.
    func run(address: String, from me: String, secret: LinkSecret, tls: Bool, logger: Logger, ready: @escaping @Sendable (Bool) -> Void) async {
        let nonce = LinkSecret.nonce()
        let time = Int64(Date().timeIntervalSince1970)
        let proof = secret.dialProof(node: me, nonce: nonce, unixTime: time)
        let name = me.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? me
        let url = "\(tls ? "wss" : "ws")://\(address)/v1/cluster?node=\(name)&nonce=\(LinkSecret.hex(nonce))&time=\(time)&proof=\(LinkSecret.hex(proof))"
        var tlsConfiguration: TLSConfiguration?
        if tls {
            // The link's trust is the cluster secret (LinkSecret), not the home's certificate.
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = .none
            tlsConfiguration = configuration
        }
        var quiet = logger
        quiet.logLevel = .warning
        let link = link
        do {
            _ = try await WebSocketClient.connect(
                url: url,
                configuration: .init(maxFrameSize: ClusterLink.maxFrameBytes, autoPing: .enabled(timePeriod: .seconds(5)), sniHostname: sni(address)),
                tlsConfiguration: tlsConfiguration, logger: quiet
            ) { inbound, outbound, _ in
                var messages = inbound.messages(maxSize: ClusterLink.maxFrameBytes).makeAsyncIterator()
                guard case .binary(let hello)? = try await messages.next(), hello.readableBytes == 48 else { return ready(false) }
                let bytes = Array(hello.readableBytesView)
                let acceptNonce = Array(bytes[0..<16])
                guard LinkSecret.equal(Array(bytes[16...]), secret.acceptProof(node: self.node, dialNonce: nonce, acceptNonce: acceptNonce)) else {
                    logger.error("node \(self.node) at \(address) did not prove the cluster secret")
                    return ready(false)
                }
                let keys = secret.keys(dialNonce: nonce, acceptNonce: acceptNonce)
                ready(true)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await link.write(to: outbound, cipher: LinkCipher(key: keys.dialer)) }
                    try await ClusterLink.receive(&messages, cipher: LinkCipher(key: keys.accepter)) { message in
                        self.receive(message)
                    }
                    link.shut()
                    group.cancelAll()
                }
            }
        } catch {
            logger.warning("cluster link to node \(node) at \(address) ended", metadata: ["error": "\(error)"])
        }
        ready(false)
        link.shut()
        // Nothing more comes from the home: waiting joins fail, and joined sockets resume (4000).
        for waiter in pending.withLockedValue({ p in defer { p = [:] }; return Array(p.values) }) { waiter.resume(returning: nil) }
        for waiter in switches.withLockedValue({ s in defer { s.waiting = [:] }; return Array(s.waiting.values) }) { waiter.resume(returning: nil) }
        for socket in sockets.withLockedValue({ s in defer { s = [:] }; return Array(s.values) }) {
            socket.close(code: CloseCode.draining, reason: "the session's home node is unreachable; resume")
        }
    }

    private func receive(_ message: LinkMessage) {
        switch message {
        case .joined(let socket, _), .refused(let socket, _, _, _):
            pending.withLockedValue { $0.removeValue(forKey: socket) }?.resume(returning: message)
        case let .frame(socket, bytes):
            _ = sockets.withLockedValue { $0[socket] }?.send(bytes)
        case let .closeSocket(socket, code, reason):
            sockets.withLockedValue { $0[socket] }?.close(code: code, reason: reason)
        case .switched(let request, _), .sessionView(let request, _):
            switches.withLockedValue { $0.waiting.removeValue(forKey: request) }?.resume(returning: message)
        case .join, .message, .closed, .reject, .close, .switchProvider, .viewSession:
            break  // an entry's messages: a home never sends them
        }
    }

    /// Joins through the home: the outcome, with this link as the joined socket's session entry.
    func join(_ context: JoinContext) async -> JoinOutcome {
        let socket = context.connection
        sockets.withLockedValue { $0[socket.id] = socket }
        let answer = await withCheckedContinuation { (reply: CheckedContinuation<LinkMessage?, Never>) in
            pending.withLockedValue { $0[socket.id] = reply }
            let sent = link.send(.join(socket: socket.id, identity: context.identity, name: context.request.name, raw: context.raw))
            if !sent, let waiter = pending.withLockedValue({ $0.removeValue(forKey: socket.id) }) { waiter.resume(returning: nil) }
        }
        switch answer {
        case .joined(_, let participant)?:
            return .joined(participant, RemoteEntry(link: self))
        case let .refused(_, code, message, retry)?:
            forget(socket.id)
            return retry ? .retry : .rejected(ProtocolError(code, message))
        default:
            forget(socket.id)
            return .rejected(ProtocolError(.providerUnavailable, "the session's home node \(node) is unreachable; try again"))
        }
    }

    /// An operator's switch of a session the home serves, made there.
    func forceSwitch(_ session: SessionID, to provider: ProviderName) async -> Result<ProviderState, ProtocolError> {
        guard case .switched(_, let result)? = await ask({ .switchProvider(socket: $0, session: session.rawValue, provider: provider.rawValue) })
        else {
            return .failure(ProtocolError(.providerUnavailable, "the session's home node \(node) is unreachable; try again"))
        }
        return result
    }

    /// The home's admin view of a session (its JSON), nil when the home has none or is unreachable.
    func sessionView(_ session: SessionID) async -> [UInt8]? {
        guard case .sessionView(_, let json)? = await ask({ .viewSession(socket: $0, session: session.rawValue) }), !json.isEmpty else {
            return nil
        }
        return json
    }

    /// Sends the request `make` builds with a fresh number; the home's answer, nil if the link ended.
    private func ask(_ make: (UInt64) -> LinkMessage) async -> LinkMessage? {
        await withCheckedContinuation { (reply: CheckedContinuation<LinkMessage?, Never>) in
            let request = switches.withLockedValue { s -> UInt64 in
                s.next += 1
                s.waiting[s.next] = reply
                return s.next
            }
            if !link.send(make(request)), let waiter = switches.withLockedValue({ $0.waiting.removeValue(forKey: request) }) {
                waiter.resume(returning: nil)
            }
        }
    }

    /// TLS's server name for `HOST:PORT`: the host, unless it is an address (which SNI cannot carry; the
    /// certificate is not checked anyway).
    private func sni(_ address: String) -> String? {
        let host = address.hasPrefix("[") ? String(address.dropFirst().prefix { $0 != "]" }) : String(address.prefix { $0 != ":" })
        return IPAddress(host) == nil ? nil : "tandem-node"
    }
}

/// This node's links to other nodes, one per node, dialled when a join first needs it.
final class ClusterDialer: Sendable {
    private let links = NIOLockedValueBox<[String: (link: DialedLink, ready: Task<Bool, Never>)]>([:])
    let secret: LinkSecret
    let me: String
    let tls: Bool
    let logger: Logger

    init(secret: LinkSecret, me: String, tls: Bool, logger: Logger) {
        self.secret = secret
        self.me = me
        self.tls = tls
        self.logger = logger
    }

    /// The link to `node`, dialled if there is none; nil when the home cannot be reached or did not
    /// prove the secret.
    func link(to node: String, address: String) async -> DialedLink? {
        let (link, ready) = links.withLockedValue { links -> (DialedLink, Task<Bool, Never>) in
            if let existing = links[node] { return existing }
            let link = DialedLink(node: node)
            let (stream, continuation) = AsyncStream<Bool>.makeStream()
            Task { [secret, me, tls, logger] in
                await link.run(address: address, from: me, secret: secret, tls: tls, logger: logger) { ok in
                    continuation.yield(ok)
                    continuation.finish()
                }
                // Ended: the next join dials again.
                self.links.withLockedValue { if $0[node]?.link === link { $0[node] = nil } }
            }
            let ready = Task { () -> Bool in
                for await ok in stream { return ok }
                return false
            }
            links[node] = (link, ready)
            return (link, ready)
        }
        return await ready.value ? link : nil
    }
}
