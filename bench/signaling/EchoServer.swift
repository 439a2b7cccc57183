import Foundation
import Hummingbird
import TandemProtocol
import HummingbirdCore
import HummingbirdTLS
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOSSL

/// The baseline: a bare WebSocket echo server on the same stack as Tandem (Hummingbird 2, NIOSSL, the
/// same frame limit and server pings), with nothing behind the socket.
enum EchoServer {
    static func run(host: String, port: Int, certificate: String, key: String, pingInterval: Duration) async throws {
        var logger = Logger(label: "echo")
        logger.logLevel = .error
        let ws = WebSocketServerConfiguration(
            maxFrameSize: ProtocolLimits.maxMessageBytes, autoPing: .enabled(timePeriod: pingInterval), closeTimeout: .seconds(5), validateUTF8: true)
        let http = HTTPServerBuilder.http1WebSocketUpgrade(configuration: .init(http1: .init(idleTimeout: .seconds(60)), ws: ws)) {
            _, _, _ in
            .upgrade([:]) { inbound, outbound, _ in
                for try await message in inbound.messages(maxSize: ProtocolLimits.maxMessageBytes) {
                    if case .text(let text) = message { try await outbound.write(.text(text)) }
                }
            }
        }
        let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
        tls.minimumTLSVersion = .tlsv12
        let app = Application(
            router: Router(), server: try .tls(http, tlsConfiguration: tls),
            configuration: .init(address: .hostname(host, port: port)),
            onServerRunning: { channel in
                FileHandle.standardOutput.write(Data("echo listening on \(channel.localAddress?.port ?? 0)\n".utf8))
            },
            logger: logger)
        try await app.runService()
    }
}
