package io.vblk.perf.report;

/**
 * One of the goals, checked against this invocation's figures.
 *
 * @param goal     what is asked, in words ("data plane on / off >= 4.3x")
 * @param value    what was measured (a ratio, IOPS, microseconds, bytes)
 * @param unit     the value's unit for display ("x", "IOPS", "us", "B/io")
 * @param bound    the bound
 * @param atLeast  whether value must be at least (true) or at most (false) the bound
 */
public record GoalCheck(String goal, double value, String unit, double bound, boolean atLeast) {
    /** Whether the goal is met; null when the value is unknown. */
    public Boolean met() {
        if (Double.isNaN(value)) {
            return null;
        }
        return atLeast ? value >= bound : value <= bound;
    }

    /** How far off the bound the value is, as a fraction of the bound (positive: short of it). */
    public double shortfall() {
        return atLeast ? (bound - value) / bound : (value - bound) / bound;
    }
}
