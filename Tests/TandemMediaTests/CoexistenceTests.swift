import NIOCore
import NIOEmbedded
import NIOSSL
import Testing

@testable import TandemMedia
@testable import TandemMediaCore

/// NIOSSL carries its own BoringSSL with every symbol prefixed; the relay links the system OpenSSL. One
/// process must be able to run both: a TLS handshake through NIOSSL (with a certificate OpenSSL made)
/// and a DTLS-SRTP handshake through OpenSSL.
@Suite struct CoexistenceTests {
    @Test func nioSSLAndSystemOpenSSLInOneProcess() throws {
        let (certPEM, keyPEM) = try DTLSIdentity.generatePEM(commonName: "localhost")
        let cert = try NIOSSLCertificate(bytes: Array(certPEM.utf8), format: .pem)
        let key = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
        let serverContext = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: [.certificate(cert)], privateKey: .privateKey(key)))
        var clientConfig = TLSConfiguration.makeClientConfiguration()
        clientConfig.trustRoots = .certificates([cert])
        clientConfig.certificateVerification = .noHostnameVerification
        let clientContext = try NIOSSLContext(configuration: clientConfig)

        let server = EmbeddedChannel(handler: NIOSSLServerHandler(context: serverContext))
        let client = EmbeddedChannel(handler: try NIOSSLClientHandler(context: clientContext, serverHostname: nil))
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 2)).wait()
        // The write completes only after the handshake, which the loop below carries.
        client.writeAndFlush(ByteBuffer(string: "hello over TLS"), promise: nil)
        var received: ByteBuffer?
        for _ in 0..<10 {
            while let b = try client.readOutbound(as: ByteBuffer.self) { try server.writeInbound(b) }
            while let b = try server.readOutbound(as: ByteBuffer.self) { try client.writeInbound(b) }
            if let r = try server.readInbound(as: ByteBuffer.self) {
                received = r
                break
            }
        }
        #expect(received.map { String(buffer: $0) } == "hello over TLS")

        // And the system OpenSSL's DTLS in the same process, keys exported and used by libsrtp2.
        var pair = try DTLSPair(clientIdentity: try DTLSIdentity.load(certificatePEM: certPEM, keyPEM: keyPEM), serverIdentity: try .generate())
        pair.run()
        guard case let .connected(local, _)? = pair.clientEvent, case let .connected(_, remote)? = pair.serverEvent else {
            Issue.record("DTLS did not connect beside NIOSSL")
            return
        }
        let rtp = hex("80601234000000640000beef") + [1, 2, 3]
        #expect(try SRTPSession(remote, direction: .inbound).unprotect(try SRTPSession(local, direction: .outbound).protect(rtp)) == rtp)
    }
}
