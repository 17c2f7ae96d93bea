package io.vblk.perf.report;

/**
 * A ratio between two results of one invocation, and the goal it is held to, if any.
 *
 * @param name        what is compared, e.g. "data plane on / off"
 * @param metric      iops, cpu_us_per_io or p50_us
 * @param numerator   the result on top
 * @param denominator the result below
 * @param goal        the goal as text ("&gt;= 4.3"), or null
 * @param goalValue   the bound; NaN when there is no goal
 * @param atLeast     whether the ratio must be at least (true) or at most (false) the bound
 */
public record Comparison(String name, String metric, BenchResult numerator, BenchResult denominator, String goal,
                         double goalValue, boolean atLeast) {
    /** A comparison without a goal. */
    public static Comparison of(String name, String metric, BenchResult numerator, BenchResult denominator) {
        return new Comparison(name, metric, numerator, denominator, null, Double.NaN, true);
    }

    /** A comparison that must reach {@code bound} ({@code atLeast}) or stay under it. */
    public static Comparison goal(String name, String metric, BenchResult numerator, BenchResult denominator, double bound,
                                  boolean atLeast) {
        return new Comparison(name, metric, numerator, denominator, (atLeast ? ">= " : "<= ") + bound, bound, atLeast);
    }

    /** The numerator's value of {@link #metric}. */
    public double numeratorValue() {
        return value(numerator, metric);
    }

    /** The denominator's value of {@link #metric}. */
    public double denominatorValue() {
        return value(denominator, metric);
    }

    /** numerator / denominator. */
    public double ratio() {
        return numeratorValue() / denominatorValue();
    }

    /** Whether the goal is met; null when there is no goal or the ratio is unknown. */
    public Boolean met() {
        double r = ratio();
        if (goal == null || Double.isNaN(r)) {
            return null;
        }
        return atLeast ? r >= goalValue : r <= goalValue;
    }

    /** A metric of a result by its JSON name. */
    public static double value(BenchResult r, String metric) {
        switch (metric) {
            case "iops":
                return r.iops();
            case "cpu_us_per_io":
                return r.cpuUsPerIo();
            case "p50_us":
                return r.latencyUs(50);
            case "p99_us":
                return r.latencyUs(99);
            default:
                throw new IllegalArgumentException("unknown metric " + metric);
        }
    }
}
