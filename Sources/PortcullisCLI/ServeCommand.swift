import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisPool
import PortcullisRuntime

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the master and its worker pool in the foreground.")

    @OptionGroup var options: ConfigOption
    @Option(help: "Worker processes (overrides server.workers).") var workers: Int?
    @Option(help: "Threads per worker (overrides server.threads).") var threads: Int?

    func run() throws {
        let config: GatewayConfig
        let bytes: [UInt8]
        do {
            bytes = try GatewayLoader.readConfig(options.config)
            config = try GatewayLoader.load(configPath: options.config, bytes: bytes).config
        } catch {
            printError(error.description)
            throw ExitCode(1)
        }
        if let workers, !(1...256).contains(workers) { throw ValidationError("--workers must be 1...256") }
        if let threads, !(1...1024).contains(threads) { throw ValidationError("--threads must be 1...1024") }
        do {
            let status = try Master(configPath: options.config, configBytes: bytes, config: config, workers: workers, threads: threads).run()
            throw ExitCode(status)
        } catch let error as RuntimeError {
            printError("portcullis: \(error.description)")
            throw ExitCode(1)
        }
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
