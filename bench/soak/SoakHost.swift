import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// The host settings the soak needs, and a bare HTTPS GET for the server's figures.
enum SoakHost {
    /// Raises this process's open-files limit (which the server it starts inherits) to at least `needed`,
    /// up to the hard limit; the limit now in force.
    static func raiseOpenFiles(needed: Int) throws -> Int {
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        var limit = rlimit()
        getrlimit(resource, &limit)
        if limit.rlim_cur < rlim_t(needed) {
            limit.rlim_cur = min(limit.rlim_max, rlim_t(needed))
            setrlimit(resource, &limit)
            getrlimit(resource, &limit)
        }
        guard limit.rlim_cur >= rlim_t(needed) else {
            throw BenchError("the open-files limit is \(limit.rlim_cur) (hard \(limit.rlim_max)); this load needs \(needed): raise the hard limit or use fewer sessions")
        }
        return Int(limit.rlim_cur)
    }

    /// The body (and headers) of `GET path` on 127.0.0.1:`port` over TLS.
    static func httpsGet(port: Int, path: String, tls: TLSConfiguration) async throws -> String {
        let context = try NIOSSLContext(configuration: tls)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: "localhost"))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: "GET \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"))
            var text = ""
            do {
                for try await chunk in inbound { text += String(buffer: chunk) }
            } catch let error as NIOSSLError where error == .uncleanShutdown {
                // The server closed after its answer without TLS's close_notify: the answer is whole.
            }
            return text
        }
    }
}
