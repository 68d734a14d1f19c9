import ArgumentParser
import PortcullisRuntime

/// Started by the master only: serves FastCGI on an inherited socket.
struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Internal: a worker process (spawned by the master).", shouldDisplay: false)

    @OptionGroup var options: ConfigOption
    @Option(help: "The generation's configuration bundle (written by the master).") var bundle: String?
    @Option(help: "Inherited listening socket descriptor.") var fd: Int32 = 3
    @Option(help: "Inherited control channel to the master.") var control: Int32?
    @Option var threads: Int?
    @Option var generation: Int = 1
    @Option(help: "The worker's slot in the master's worker table.") var slot: Int?

    func run() throws {
        WorkerProcess.run(configPath: options.config, bundlePath: bundle, listenFD: fd, controlFD: control,
                          loops: threads, generation: generation, slot: slot)
    }
}
