import { Queue, UnrecoverableError, Worker } from "bullmq";
import { Redis } from "ioredis";
import type { z } from "zod";
import { type JobDefinition, type JobRunner, PermanentJobError, type Processor } from "./runner.ts";

export interface BullMqRunnerOptions {
  redisUrl: string;
  /** Key prefix: isolates deployments and test runs sharing a Redis. */
  prefix: string;
  concurrency?: number;
}

const QUEUE = "jobs";

/** The distributed runner: one BullMQ queue, processors dispatched by job name. */
export class BullMqJobRunner implements JobRunner {
  private readonly processors = new Map<string, { schema: z.ZodType; run: Processor<unknown> }>();
  private readonly connection: Redis;
  private readonly queue: Queue;
  private worker: Worker | undefined;

  constructor(private readonly options: BullMqRunnerOptions) {
    // BullMQ requires maxRetriesPerRequest: null on connections used by workers.
    this.connection = new Redis(options.redisUrl, { maxRetriesPerRequest: null });
    this.queue = new Queue(QUEUE, {
      connection: this.connection,
      prefix: options.prefix,
      defaultJobOptions: {
        removeOnComplete: 1000,
        removeOnFail: 5000,
        attempts: 3,
        backoff: { type: "exponential", delay: 1000 },
      },
    });
  }

  register<S extends z.ZodType>(job: JobDefinition<S>, processor: Processor<z.infer<S>>): void {
    this.processors.set(job.name, { schema: job.payload, run: processor as Processor<unknown> });
  }

  async schedule<S extends z.ZodType>(
    id: string,
    everyMs: number,
    job: JobDefinition<S>,
    payload: z.infer<S>,
  ): Promise<void> {
    await this.queue.upsertJobScheduler(
      id,
      { every: everyMs },
      { name: job.name, data: job.payload.parse(payload) },
    );
  }

  async unschedule(id: string): Promise<void> {
    await this.queue.removeJobScheduler(id);
  }

  async scheduleIds(): Promise<string[]> {
    const schedulers = await this.queue.getJobSchedulers();
    return schedulers.map((s) => s.key);
  }

  async enqueue<S extends z.ZodType>(job: JobDefinition<S>, payload: z.infer<S>): Promise<void> {
    await this.queue.add(job.name, job.payload.parse(payload));
  }

  async start(): Promise<void> {
    this.worker = new Worker(
      QUEUE,
      async (job) => {
        const processor = this.processors.get(job.name);
        if (!processor) throw new UnrecoverableError(`no processor for job ${job.name}`);
        const parsed = processor.schema.safeParse(job.data);
        if (!parsed.success) throw new UnrecoverableError(`invalid payload for ${job.name}`);
        try {
          await processor.run(parsed.data, { jobId: job.id ?? "", attempt: job.attemptsMade + 1 });
        } catch (err) {
          if (err instanceof PermanentJobError) throw new UnrecoverableError(err.message);
          throw err;
        }
      },
      {
        connection: this.connection.duplicate(),
        prefix: this.options.prefix,
        concurrency: this.options.concurrency ?? 8,
      },
    );
    await this.worker.waitUntilReady();
  }

  async stop(): Promise<void> {
    // close() waits for active jobs to finish.
    await this.worker?.close();
    await this.queue.close();
    this.connection.disconnect();
  }
}
