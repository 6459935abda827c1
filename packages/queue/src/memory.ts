import type { z } from "zod";
import type { JobDefinition, JobRunner, Processor } from "./runner.ts";

/** The embedded-mode runner: the same processors, called in this process on timers. */
export class InProcessJobRunner implements JobRunner {
  private readonly processors = new Map<string, { schema: z.ZodType; run: Processor<unknown> }>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly running = new Set<Promise<void>>();
  private started = false;
  private seq = 0;

  constructor(private readonly onError: (err: unknown, job: string) => void = () => {}) {}

  register<S extends z.ZodType>(job: JobDefinition<S>, processor: Processor<z.infer<S>>): void {
    this.processors.set(job.name, { schema: job.payload, run: processor as Processor<unknown> });
  }

  async schedule<S extends z.ZodType>(
    id: string,
    everyMs: number,
    job: JobDefinition<S>,
    payload: z.infer<S>,
  ): Promise<void> {
    clearInterval(this.timers.get(id));
    const timer = setInterval(() => void this.enqueue(job, payload), everyMs);
    timer.unref();
    this.timers.set(id, timer);
    if (this.started) void this.enqueue(job, payload);
  }

  async unschedule(id: string): Promise<void> {
    clearInterval(this.timers.get(id));
    this.timers.delete(id);
  }

  async scheduleIds(): Promise<string[]> {
    return [...this.timers.keys()];
  }

  async enqueue<S extends z.ZodType>(job: JobDefinition<S>, payload: z.infer<S>): Promise<void> {
    const processor = this.processors.get(job.name);
    if (!processor || !this.started) return;
    const data = processor.schema.parse(payload);
    const jobId = `${job.name}:${++this.seq}`;
    const run = processor
      .run(data, { jobId, attempt: 1 })
      .catch((err) => this.onError(err, job.name))
      .finally(() => this.running.delete(run));
    this.running.add(run);
  }

  async start(): Promise<void> {
    this.started = true;
  }

  async stop(): Promise<void> {
    this.started = false;
    for (const t of this.timers.values()) clearInterval(t);
    this.timers.clear();
    await Promise.allSettled([...this.running]);
  }
}
