import type { z } from "zod";

/** A processor for one job name. Throw `PermanentJobError` for failures retrying cannot fix. */
export type Processor<T> = (payload: T, meta: { jobId: string; attempt: number }) => Promise<void>;

export class PermanentJobError extends Error {
  override name = "PermanentJobError";
}

export interface JobDefinition<S extends z.ZodType> {
  name: string;
  payload: S;
}

/** Runs jobs: BullMQ on Redis in distributed mode, in-process in embedded mode. */
export interface JobRunner {
  register<S extends z.ZodType>(job: JobDefinition<S>, processor: Processor<z.infer<S>>): void;
  /** Creates or updates a repeating job with a stable id (idempotent). */
  schedule<S extends z.ZodType>(
    id: string,
    everyMs: number,
    job: JobDefinition<S>,
    payload: z.infer<S>,
  ): Promise<void>;
  unschedule(id: string): Promise<void>;
  scheduleIds(): Promise<string[]>;
  enqueue<S extends z.ZodType>(job: JobDefinition<S>, payload: z.infer<S>): Promise<void>;
  start(): Promise<void>;
  /** Stops taking jobs and waits for running ones. */
  stop(): Promise<void>;
}

/** The producing half of a runner: what a data plane needs to hand work to the worker. */
export type JobProducer = Pick<JobRunner, "enqueue">;
