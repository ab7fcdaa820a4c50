# nbgrader configuration for "Compressing Neural Networks" (nbgrader 0.9). Copy this file into your course
# directory (the folder that holds source/, release/, submitted/ ...); README "Grading with nbgrader" has the steps.
import os

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

c.CourseDirectory.course_id = "compressing-nn"

# Grade at smoke scale. Only the check cells earn points, and they do not depend on the scale; the rest of a
# lesson just has to run, and at smoke scale it does so in seconds to a few minutes per notebook. The kernels that
# nbgrader starts inherit this environment. Set LECTURE_UTILS_SCALE before calling nbgrader to override.
os.environ.setdefault("LECTURE_UTILS_SCALE", "smoke")
# Failed checks raise while nbgrader executes (it sets NBGRADER_EXECUTION); never switch that off here.
os.environ.pop("LECTURE_UTILS_STRICT_CHECKS", None)
# No live progress bars in graded copies.
os.environ.setdefault("TQDM_DISABLE", "1")

# Seconds one cell may run. Lessons load the fine-tuned teacher from the course's cache (<checkout>/.cache, or
# $LECTURE_UTILS_CACHE); train it once before grading (README) so no submission trains it inside a cell. The
# slowest smoke cells (lesson 06's int8 kernels) took up to about 220 s on a busy 2-core machine.
c.Execute.timeout = 900  # nbgrader's default is 30 s, too short for the first cell of most lessons
# The notebooks ask for the kernel "compressing-nn"; `python -m lecture_utils prepare` installs it.
