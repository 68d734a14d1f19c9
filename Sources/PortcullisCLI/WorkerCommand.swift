import ArgumentParser
import PortcullisRuntime

/// Started by the master only: serves FastCGI on an inherited socket.
struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Internal: a worker process (spawned by the master).", shouldDisplay: false)

    @OptionGroup var options: ConfigOption
    @Option(help: "Inherited listening socket descriptor.") var fd: Int32 = 3
    @Option var threads: Int?
    @Option var generation: Int = 1

    func run() throws {
        WorkerProcess.run(configPath: options.config, listenFD: fd, threads: threads, generation: generation)
    }
}
