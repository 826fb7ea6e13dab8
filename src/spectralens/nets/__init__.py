"""Small reference networks used by the demo, benchmarks and reproductions."""
from .gpt import GPT, GPTConfig
from .teacher_student import TeacherStudentConfig, TwoLayerStudent, make_teacher_student_data

__all__ = ["GPT", "GPTConfig", "TeacherStudentConfig", "TwoLayerStudent", "make_teacher_student_data"]
