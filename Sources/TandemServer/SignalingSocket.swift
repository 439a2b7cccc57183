import HummingbirdWebSocket
import Logging
import Prometheus
import NIOCore
import NIOWebSocket
import TandemArbiter
import TandemJWT
import TandemProtocol

/// Serves one signaling WebSocket: reads and validates client messages, checks the join and its token,
/// and hands everything after the join to its `LiveSession`, which writes to the socket's `Connection`.
struct SignalingSocket {
    let hub: SignalingHub
    let connection: Connection
    let logger: Logger

    private enum Joined {
        case no
        case yes(ParticipantID, any SessionEntry)
        case left
    }

    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async {
        hub.metrics.connections.increment()
        hub.socketOpened()
        hub.awaitJoin(connection)
        defer {
            hub.metrics.connections.decrement()
            hub.socketClosed()
            hub.forgetJoin(connection)
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                if let (code, reason) = await connection.closeRequested() {
                    // A peer that stopped reading never takes the close frame either: drop it after a while.
                    let abort = Task {
                        try await Task.sleep(for: .seconds(10))
                        connection.abort()
                    }
                    try? await outbound.close(WebSocketErrorCode(codeNumber: Int(code)), reason: reason)
                    abort.cancel()
                }
            }
            group.addTask { await read(inbound) }
            // Whichever ends first, the close sent or the reader (socket gone), ends the socket.
            _ = await group.next()
            connection.finish()
            group.cancelAll()
        }
    }

    private func read(_ inbound: WebSocketInboundStream) async {
        var joined = Joined.no
        var limit = SocketRateLimit(rate: hub.config.rateLimitPerSecond, burst: hub.config.rateLimitBurst, now: hub.now())
        // Set once this reader asked for a close, which a joined socket's session carries out later.
        var closeAsked = false
        do {
            for try await message in inbound.messages(maxSize: ProtocolLimits.maxMessageBytes) {
                // Closing: what the peer still sends is ignored until the close handshake ends the stream.
                if closeAsked || connection.isClosing { continue }
                switch limit.check(now: hub.now()) {
                case .allow: break
                case .refuse(let answer):
                    if answer { reject(ProtocolError(.rateLimited, "more than \(Int(hub.config.rateLimitPerSecond)) messages a second"), joined) }
                    continue
                case .close:
                    close(CloseCode.rateLimited, "rate limit exceeded repeatedly", joined)
                    closeAsked = true
                    continue
                }
                let bytes: [UInt8]
                switch message {
                case .binary:
                    hub.metrics.countIn("invalid")
                    reject(ProtocolError(.badMessage, "binary frames are not part of the protocol; send JSON text"), joined)
                    continue
                case .text(let text):
                    bytes = Array(text.utf8)
                }
                let decoded: ClientMessage
                do {
                    decoded = try ClientMessage.decode(bytes)
                } catch {
                    hub.metrics.countIn("invalid")
                    reject(error, joined)
                    continue
                }
                hub.metrics.countIn(decoded.type)
                switch joined {
                case .no:
                    guard case .join(let request) = decoded else {
                        reject(ProtocolError(.notJoined, "send join first", ref: decoded.type), joined)
                        continue
                    }
                    if let result = await join(request, raw: bytes) {
                        joined = .yes(result.0, result.1)
                        hub.forgetJoin(connection)
                    }
                case .yes(let id, let live):
                    if !live.message(id, socket: connection.id, decoded, raw: bytes) {
                        connection.close(code: CloseCode.normal, reason: "the session has ended")
                    }
                    if case .leave = decoded { joined = .left }
                case .left:
                    break
                }
            }
        } catch {
            logger.debug("socket read ended", metadata: ["error": "\(error)"])
        }
        if case .yes(let id, let live) = joined {
            live.socketClosed(id, socket: connection.id)
        }
    }

    /// Checks the token, then asks the hub to join. Nil if refused (the error is already sent).
    private func join(_ request: JoinRequest, raw: [UInt8]) async -> (ParticipantID, any SessionEntry)? {
        var identity: String?
        var request = request
        if let token = request.token {
            guard let tokens = hub.tokens else {
                refuse(ProtocolError(.unauthorized, "this server has no token secret configured", ref: "join"), close: CloseCode.unauthorized)
                return nil
            }
            do {
                let claims = try tokens.verify(token, session: request.session.rawValue, nowSeconds: hub.wallMs() / 1000)
                identity = claims.identity
                if request.name == nil { request.name = claims.name }
            } catch {
                let forbidden = error.code == .wrongSession
                refuse(
                    ProtocolError(forbidden ? .forbidden : .unauthorized, error.description, ref: "join"),
                    close: forbidden ? CloseCode.forbidden : CloseCode.unauthorized)
                return nil
            }
        } else if !(hub.config.dev && connection.isLoopback) {
            refuse(ProtocolError(.unauthorized, "a join token is required", ref: "join"), close: CloseCode.unauthorized)
            return nil
        }
        let outcome = await hub.join(JoinContext(request: request, identity: identity, connection: connection, receivedAt: .now, raw: raw))
        switch outcome {
        case .joined(let id, let live):
            return (id, live)
        case .rejected(let error):
            refuse(error.with(ref: "join"), close: nil)
            return nil
        case .retry:
            refuse(ProtocolError(.internal, "could not join; try again", ref: "join"), close: nil)
            return nil
        }
    }

    /// Answers an error outside any participant's stream (before a join), with `seq` 0.
    private func refuse(_ error: ProtocolError, close: UInt16?) {
        hub.metrics.countOut("error")
        hub.metrics.countError(error.code)
        connection.send(ServerMessage.error(error).encoded(seq: 0))
        if let close { connection.close(code: close, reason: error.message) }
    }

    /// Closes the socket after whatever it has been sent so far; a joined socket's session sends that,
    /// so the close goes through the session too.
    private func close(_ code: UInt16, _ reason: String, _ joined: Joined) {
        if case .yes(let id, let live) = joined, live.close(id, socket: connection.id, code: code, reason: reason) { return }
        connection.close(code: code, reason: reason)
    }

    private func reject(_ error: ProtocolError, _ joined: Joined) {
        if case .yes(let id, let live) = joined {
            live.reject(id, socket: connection.id, error)
        } else {
            refuse(error, close: nil)
        }
    }
}
