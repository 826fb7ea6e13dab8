"""Small reference networks used by the demo, benchmarks and reproductions."""
from .digits_cnn import DigitsCNN, DigitsTrainConfig, train_digits_cnn
from .gpt import GPT, GPTConfig
from .teacher_student import TeacherStudentConfig, TwoLayerStudent, make_teacher_student_data

__all__ = ["GPT", "GPTConfig", "TeacherStudentConfig", "TwoLayerStudent", "make_teacher_student_data",
           "DigitsCNN", "DigitsTrainConfig", "train_digits_cnn"]
